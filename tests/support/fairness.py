"""One identity floods a tunnel; another identity's query must still get the next free slot.

The same scenario runs on both relays (tests/e2e/test_fairness.py, tests/worker/test_fairness.py)
with a real connector and tdslite behind them. The tunnel has `SLOTS` slots (one connector
connection, ``max_concurrent_queries = SLOTS``) and the relay caps one identity at
`PER_IDENTITY` queries in flight or waiting.

The flood's queries hold their slots until the test lets them go: an admin transaction keeps an
uncommitted write to the table they read, so tdslite's READ COMMITTED makes them wait (the
victim's query reads no table and does not wait). The test commits once every flood request has
arrived and the victim's query waits for a slot; no figure depends on how fast the machine is.

What the design promises, and what is asserted (no timing, only order and counts):

1. Of `FLOOD` concurrent slow queries of one identity, `PER_IDENTITY` are admitted or wait; every
   other one is refused at once: 429 limits.too_many_queries, ``"limit": "identity"``, with
   Retry-After.
2. The victim's query, sent while the flood fills every slot and the queue, is answered 200.
3. It takes the first slot that frees: the flooder's statements that tdslite finished after the
   victim's request was sent and before the victim's statement are at most the `SLOTS` that held
   the slots (each frees one; the first free one goes to the victim) plus `SLOTS` - 1 that may
   finish while the victim's own statement runs, plus one that may finish while the victim's
   request crosses the relay: ``2 * SLOTS``. A FIFO queue would put the victim behind every
   queued flood query (``PER_IDENTITY - SLOTS`` of them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from connector.config import load_config
from connector.runtime import open_connector
from edgetds.devidp import DevIdP, open_dev_idp
from identity.oidc import default_verify_context
from protocol import events
from tdslite import TdsServer, open_server
from tests.support.e2e_stack import SETUP_SQL, TDSLITE_USERS, admin_batch, admin_connection
from tests.support.protocol_peer import Peer
from tests.support.waiting import eventually

#: the tunnel's capacity: one connector connection taking this many queries at once
SLOTS = 2
#: the relay's max_queries_per_identity in this scenario
PER_IDENTITY = 100
#: concurrent queries of the flooding identity
FLOOD = 300
#: reads table d, which the scenario's open admin transaction has written: it waits for the commit
FLOOD_SQL = "SELECT 'flood' AS who, COUNT(*) AS c FROM d"
VICTIM_SQL = "SELECT 'victim' AS who"
#: relay [limits] for the scenario: a long admission wait (the flood queue must outlive setup)
RELAY_LIMITS = {
    "auth_failure_burst": 10_000,
    "query_burst": 10_000,
    "admission_wait_ms": 120_000,
    "query_timeout_ms": 240_000,
}
#: the connector's [connector] settings for the scenario
CONNECTOR_OPTIONS = {"ha_connections": 1, "max_concurrent_queries": SLOTS}

#: GET the relay's admission counts for the tunnel: {"admitted", "waiting", "waiting_identities"}
State = Callable[[httpx.AsyncClient], Awaitable[dict[str, int]]]


@dataclass
class Outcome:
    """What the flood and the victim saw (figures for the report)."""

    statuses: Counter[int] = field(default_factory=Counter)
    refusals: Counter[tuple[str, str]] = field(default_factory=Counter)
    retry_after: set[str | None] = field(default_factory=set)
    flood_done_before_victim_sent: int = 0
    flood_done_before_victim_ran: int = 0
    victim_status: int = 0
    victim_body: str = field(default="", repr=False)


@asynccontextmanager
async def idp_and_db(tmp_path: Path) -> AsyncIterator[tuple[DevIdP, TdsServer]]:
    """The dev IdP and tdslite (with the e2e tables) for the scenario."""
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    async with (
        open_dev_idp(key_dir=tmp_path / "idp") as idp,
        open_server(users=users, db=":memory:") as db,
    ):
        await trio.to_thread.run_sync(admin_batch, db, SETUP_SQL)
        yield idp, db


async def run_flood(
    connector_config: Path, *, query_url: str, idp: DevIdP, db: TdsServer, state: State
) -> Outcome:
    """Start the real connector from `connector_config`, then run `flood_and_victim`."""
    async with open_connector(load_config(connector_config)) as connector:
        await connector.wait_ready(1)
        outcome = await flood_and_victim(query_url=query_url, idp=idp, db=db, state=state)
    print(outcome)  # the figures (pytest -s shows them)
    return outcome


def _flood_statements(db: TdsServer) -> list[str]:
    return [s for s in db.statement_log.statements() if "'flood'" in s or "'victim'" in s]


@asynccontextmanager
async def _table_d_held(db: TdsServer) -> AsyncIterator[Callable[[], None]]:
    """An admin transaction with an uncommitted write to table d; yields its commit (blocking:
    call it in a thread, as every python-tds call here: tdslite runs on this trio loop)."""

    def hold() -> Any:
        conn = admin_connection(db)
        conn.cursor().execute("BEGIN TRANSACTION; UPDATE d SET n = n WHERE n = 0")
        return conn

    conn = await trio.to_thread.run_sync(hold)
    try:
        yield lambda: conn.cursor().execute("COMMIT")
    finally:
        await trio.to_thread.run_sync(conn.close)  # rolls back if the commit was not reached


async def flood_and_victim(*, query_url: str, idp: DevIdP, db: TdsServer, state: State) -> Outcome:
    """Run the scenario (module docstring) and check its promises; returns the figures."""
    # One query first, so that the relay and the connector hold the dev IdP's keys before the
    # flood: the dev IdP answers from this test's event loop, which the flood's requests keep
    # busy, and a key fetch that times out then fails the flood's first queries (auth internal).
    async with httpx.AsyncClient(
        verify=default_verify_context(), timeout=httpx.Timeout(60)
    ) as http:
        headers = {"Authorization": f"Bearer {idp.mint(sub='warm-up', groups=['analysts'])}"}
        response = await http.post(query_url, json={"sql": "SELECT 1 AS n"}, headers=headers)
    assert response.status_code == 200, response.text
    async with _table_d_held(db) as release_the_flood:
        return await _flood_and_victim(query_url, idp, db, state, release_the_flood)


async def _flood_and_victim(
    query_url: str, idp: DevIdP, db: TdsServer, state: State, release: Callable[[], None]
) -> Outcome:
    flooder = {"Authorization": f"Bearer {idp.mint(sub='flooder', groups=['analysts'])}"}
    victim = {"Authorization": f"Bearer {idp.mint(sub='victim', groups=['analysts'])}"}
    out = Outcome()
    pool = httpx.Limits(max_connections=FLOOD + 10, max_keepalive_connections=FLOOD + 10)
    async with (
        httpx.AsyncClient(
            verify=default_verify_context(), timeout=httpx.Timeout(300), limits=pool
        ) as http,
        trio.open_nursery() as nursery,
    ):

        async def flood_one() -> None:
            response = await http.post(query_url, json={"sql": FLOOD_SQL}, headers=flooder)
            out.statuses[response.status_code] += 1
            if response.status_code == 429:
                error = response.json()["error"]
                out.refusals[error["code"], error.get("limit", "")] += 1
                out.retry_after.add(response.headers.get("retry-after"))

        for _ in range(FLOOD):
            nursery.start_soon(flood_one)
        # Every flood request reached the relay: admitted, waiting, or answered.
        counts: dict[str, int] = {}

        async def all_arrived() -> bool:
            counts.update(await state(http))
            return counts["admitted"] + counts["waiting"] + out.statuses.total() >= FLOOD

        await eventually(all_arrived)
        assert counts["admitted"] == SLOTS, counts
        assert counts["waiting"] > SLOTS, counts  # the flooder's queue is long
        out.flood_done_before_victim_sent = len(_flood_statements(db))
        answered = trio.Event()

        async def send_victim() -> None:
            response = await http.post(query_url, json={"sql": VICTIM_SQL}, headers=victim)
            out.victim_status, out.victim_body = response.status_code, response.text
            answered.set()

        nursery.start_soon(send_victim)

        async def victim_waits() -> bool:
            return (await state(http))["waiting_identities"] == 2

        await eventually(victim_waits)  # queued behind the flooder's waiting queries
        await trio.to_thread.run_sync(release)  # the flood's two slots free up now
        await answered.wait()
        statements = _flood_statements(db)
        nursery.cancel_scope.cancel()  # the rest of the flood is not needed

    assert out.victim_status == 200, out.victim_body
    assert '["victim"]' in out.victim_body, out.victim_body
    out.flood_done_before_victim_ran = statements.index(VICTIM_SQL)
    # 1. the per-identity cap: the excess was refused at once, naming the limit
    assert out.statuses[429] == FLOOD - PER_IDENTITY, out.statuses
    assert set(out.refusals) == {("limits.too_many_queries", "identity")}
    assert out.retry_after == {"1"}
    # 3. the victim took the first slot that freed (see the module docstring for the bound)
    ran_after_sent = out.flood_done_before_victim_ran - out.flood_done_before_victim_sent
    assert ran_after_sent <= 2 * SLOTS, (ran_after_sent, statements)
    return out


#: the relay's max_queries_per_identity in `relay_admission_scenario`
SMALL_CAP = 3


async def relay_admission_scenario(
    *,
    client: httpx.AsyncClient,
    url: str,
    idp: DevIdP,
    peer: Callable[..., AbstractAsyncContextManager[Peer]],
    state: State,
) -> None:
    """The relay's admission against a protocol peer that takes ONE stream and holds each query
    until the test releases it (the relay's tunnel has `SMALL_CAP` as max_queries_per_identity):

    1. a's first query holds the only slot; a's next two wait; a's fourth is refused at once
       (429, "limit": "identity", Retry-After);
    2. b's query waits behind a's two; when a's first ends, the slot goes to b (fewest in
       flight), then to a's in order;
    3. a query that cannot get a slot within its timeout_ms is refused (429, "limit": "tunnel");
    4. a connector's own 429 reaches the client with Retry-After.
    """
    gates: dict[str, trio.Event] = {}

    async def hold(p: Peer, q: events.Query) -> None:
        assert q.sql is not None
        if q.sql == "connector full":
            await p.error(q.stream_id, "limits.too_many_queries", "busy", q.query_id)
            return
        await gates.setdefault(q.sql, trio.Event()).wait()
        await p.done(q.stream_id, rows=0, query_id=q.query_id)

    a = {"Authorization": f"Bearer {idp.mint(sub='a')}"}
    b = {"Authorization": f"Bearer {idp.mint(sub='b')}"}
    answers: dict[str, httpx.Response] = {}

    async def send(sql: str, headers: dict[str, str], **body: Any) -> None:
        answers[sql] = await client.post(url, json={"sql": sql, **body}, headers=headers)

    async def waiting(count: int) -> None:
        async def enough() -> bool:
            return (await state(client))["waiting"] >= count

        await eventually(enough, interval=0.02)

    async with peer(handler=hold, max_streams=1) as p, trio.open_nursery() as nursery:
        nursery.start_soon(send, "a1", a)
        await p.wait_query(1)
        nursery.start_soon(send, "a2", a)
        await waiting(1)
        nursery.start_soon(send, "a3", a)
        await waiting(2)
        await send("a4", a)
        refused = answers["a4"]
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["limit"] == "identity"
        nursery.start_soon(send, "b1", b)
        await waiting(3)
        await send("b-late", b, timeout_ms=100)  # no slot frees within its timeout
        late = answers["b-late"]
        assert late.status_code == 429, late.text
        assert late.headers["retry-after"] == "1"
        assert late.json()["error"]["limit"] == "tunnel"
        for sql in ("a1", "b1", "a2", "a3"):
            gates.setdefault(sql, trio.Event()).set()
        await p.wait_query(4)
    assert [q.sql for q in p.queries] == ["a1", "b1", "a2", "a3"]
    assert all(answers[sql].status_code == 200 for sql in ("a1", "b1", "a2", "a3"))
    async with peer(handler=hold) as p:
        await send("connector full", b)
    full = answers["connector full"]
    assert full.status_code == 429, full.text
    assert full.headers["retry-after"] == "1"
