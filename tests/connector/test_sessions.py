"""Sessions at the connector (SPEC.md 7.4): a scripted relay sends session ops to the real
connector, which runs them on tdslite with real tokens from the dev IdP.

What tdslite holds (read by an admin connection of its own) is the proof: committed rows are
there, rolled-back ones are not, and a session's connection comes back reset."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from connector.config import load_config
from connector.results import QueryFailed
from connector.runtime import Connector, open_connector
from connector.sessions import Session
from edgetds.devidp import DevIdP
from protocol import SessionEnd, new_session_id
from tdslite import TdsServer, open_server
from tests.connector.rogue_relay import RogueRelay, RogueSession, StreamResult
from tests.support.connector_keys import Keys, config_for
from tests.support.e2e_stack import SETUP_SQL, TDSLITE_USERS, admin_batch
from tests.support.sessions_http import STOCK_SQL, stock


@dataclass
class Rig:
    connector: Connector
    relay: RogueSession
    db: TdsServer
    idp: DevIdP

    def token(self, sub: str = "bob", groups: tuple[str, ...] = ("admins",)) -> str:
        return self.idp.mint(sub=sub, groups=list(groups))

    async def op(
        self, sid: str, op: str, *, token: str | None = None, sql: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        """One session op; its terminal record (``{"done": ...}`` or ``{"error": ...}``)."""
        params = extra.pop("params", {})
        result: StreamResult = await self.relay.query(
            token=token or self.token(),
            sql=sql,
            params=params,
            session={"id": sid, "op": op, **extra},
        )
        await result.done.wait()
        last: dict[str, Any] = json.loads(result.body.splitlines()[-1])
        return last

    async def begin(self, **extra: Any) -> str:
        """Open a session (op ``begin``); its id."""
        sid = new_session_id()
        begun = await self.op(sid, "begin", **extra)
        assert begun["done"]["session"]["state"] == "open", begun
        return sid

    async def rows(self, sid: str, sql: str, **kw: Any) -> list[Any]:
        result = await self.relay.query(
            token=kw.pop("token", None) or self.token(), sql=sql, session={"id": sid, "op": "run"}
        )
        await result.done.wait()
        lines = [json.loads(line) for line in result.body.splitlines()]
        assert "done" in lines[-1], lines[-1]
        return [line for line in lines if isinstance(line, list)]

    async def table(self) -> list[tuple[int, int]]:
        """The stock table as tdslite holds it (committed rows)."""
        return await stock(self.db)


@asynccontextmanager
async def rig(
    tmp_path: Path,
    keys: Keys,
    idp: DevIdP,
    rogue: RogueRelay,
    sessions: dict[str, int] | None = None,
) -> AsyncIterator[Rig]:
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    async with open_server(users=users, db=":memory:") as db:
        await trio.to_thread.run_sync(admin_batch, db, SETUP_SQL + STOCK_SQL)
        path = config_for(
            tmp_path, keys, idp, rogue.ws_url, db_port=db.port, database=db.engine.database,
            ha_connections=1,
        )  # fmt: skip
        text = path.read_text() + "\n[sessions]\n"
        path.write_text(text + "".join(f"{k} = {v}\n" for k, v in (sessions or {}).items()))
        async with open_connector(load_config(path)) as connector:
            relay = await rogue.wait_session()
            await relay.ready.wait()
            yield Rig(connector, relay, db, idp)


async def test_commit_keeps_rollback_undoes_and_ended_ids_say_why(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    with trio.fail_after(60):
        async with rig(tmp_path, keys, idp, rogue) as r:
            sid = new_session_id()
            begun = await r.op(sid, "begin", isolation="serializable")
            assert begun["done"]["session"]["state"] == "open", begun
            assert begun["done"]["session"]["idle_timeout_ms"] == 30_000
            moved = await r.op(sid, "run", sql="UPDATE stock SET qty = qty - 3 WHERE id = 1")
            assert moved["done"]["session"] == {"id": sid, "state": "open"}
            assert await r.rows(sid, "SELECT CAST(SESSION_CONTEXT(N'edgetds.session') AS "
                                "nvarchar(40)), @@TRANCOUNT") == [[sid, 1]]  # fmt: skip
            done = await r.op(sid, "commit")
            assert done["done"]["session"] == {"id": sid, "state": "ended", "reason": "committed"}
            assert (await r.table())[0] == (1, 7)
            again = await r.op(sid, "commit")
            assert again["error"]["code"] == "session.ended"
            assert again["error"]["session"]["reason"] == "committed"

            other = await r.begin()
            await r.op(other, "run", sql="UPDATE stock SET qty = 0 WHERE id = 1")
            stolen = await r.op(other, "run", sql="SELECT 1", token=r.token("mallory"))
            assert stolen["error"]["code"] == "session.wrong_identity"
            rolled = await r.op(other, "rollback")
            assert rolled["done"]["session"]["reason"] == "rolled_back"
            assert (await r.table())[0] == (1, 7)
            after = await r.op(other, "run", sql="SELECT 1")
            assert after["error"]["code"] == "session.ended"
            assert after["error"]["session"]["reason"] == "rolled_back"
            unknown = await r.op(new_session_id(), "run", sql="SELECT 1")
            assert unknown["error"]["code"] == "session.not_found"
            assert r.connector.service.sessions.open_sessions() == []
            metric = r.connector.ops.registry.get_sample_value
            assert metric("edgetds_connector_sessions_open") == 0
            for reason in ("committed", "rolled_back"):
                assert metric("edgetds_connector_sessions_ended_total", {"reason": reason}) == 1


async def test_a_failing_statement_keeps_the_transaction_a_fatal_one_ends_it(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    with trio.fail_after(60):
        async with rig(tmp_path, keys, idp, rogue) as r:
            sid = await r.begin()
            await r.op(sid, "run", sql="UPDATE stock SET qty = qty - 4 WHERE id = 1")
            dup = await r.op(sid, "run", sql="INSERT INTO stock (id, qty) VALUES (1, 1)")
            assert dup["error"]["code"] == "sql.error"
            assert dup["error"]["sql"]["number"] == 2627
            assert dup["error"]["session"] == {"id": sid, "state": "open"}
            assert await r.rows(sid, "SELECT qty FROM stock WHERE id = 1") == [[6]]
            await r.op(sid, "rollback")
            assert (await r.table())[0] == (1, 10)

            doomed = await r.begin()
            await r.op(doomed, "run", sql="UPDATE stock SET qty = 99 WHERE id = 2")
            # a conversion error rolls the transaction back in SQL Server (XACT_ABORT OFF too)
            bad = await r.op(doomed, "run", sql="SELECT CAST(N'x' AS int)")
            assert bad["error"]["code"] == "sql.error"
            assert bad["error"]["session"]["reason"] == "rolled_back_by_server", bad
            assert (await r.table())[1] == (2, 0)
            late = await r.op(doomed, "commit")
            assert late["error"]["code"] == "session.ended"


async def test_savepoints_and_transaction_control_is_refused(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    with trio.fail_after(60):
        async with rig(tmp_path, keys, idp, rogue) as r:
            sid = await r.begin()
            await r.op(sid, "run", sql="UPDATE stock SET qty = 1 WHERE id = 2")
            saved = await r.op(sid, "savepoint", name="before_big")
            assert saved["done"]["session"]["state"] == "open"
            await r.op(sid, "run", sql="UPDATE stock SET qty = 1000 WHERE id = 2")
            back = await r.op(sid, "rollback_to", name="before_big")
            assert "done" in back, back
            control = ("COMMIT", "ROLLBACK TRANSACTION", "SET XACT_ABORT ON",
                       "BEGIN TRAN; SELECT 1", "EXEC (N'COMMIT')", "SELECT 1 /* open")  # fmt: skip
            for sql in control:
                refused = await r.op(sid, "run", sql=sql)
                assert refused["error"]["code"] == "policy.denied", (sql, refused)
                assert refused["error"]["session"]["state"] == "open"
            # keywords in strings, brackets and comments are data, not control
            ok = await r.rows(sid, "SELECT N'COMMIT' AS [rollback] -- SAVE TRAN x")
            assert ok == [["COMMIT"]]
            await r.op(sid, "commit")
            assert (await r.table())[1] == (2, 1)
            # the refused ones never reached SQL Server
            assert set(control).isdisjoint(r.db.statement_log.statements())


async def test_a_pooled_connection_comes_back_reset(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    with trio.fail_after(60):
        async with rig(tmp_path, keys, idp, rogue) as r:
            sid = await r.begin(isolation="repeatable read")
            [[spid]] = await r.rows(sid, "SELECT @@SPID")
            await r.op(sid, "run", sql="CREATE TABLE #scratch (n int)")
            await r.op(sid, "run", sql="SET DATEFIRST 3")
            await r.op(sid, "rollback")
            # the most recently returned connection is the next one lent (the pool is a stack)
            one = await r.relay.query(
                token=r.token(),
                sql="SELECT @@SPID, OBJECT_ID(N'tempdb..#scratch'), @@DATEFIRST, "
                "CAST(SESSION_CONTEXT(N'edgetds.session') AS nvarchar(40)), @@TRANCOUNT",
            )
            await one.done.wait()
            rows = [json.loads(x) for x in one.body.splitlines() if x.startswith(b"[")]
            assert rows == [[spid, None, 7, None, 0]]


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Real time, plus jumps: a session's timers run on trio's clock."""
    return trio.testing.MockClock(rate=1.0)


async def test_idle_and_lifetime_expiry_roll_back(
    tmp_path: Path,
    keys: Keys,
    idp: DevIdP,
    rogue: RogueRelay,
    clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60 + 1000):  # the clock jumps 932.5 s in all
        lifetime = {"idle_timeout_ms": 200_000, "max_lifetime_ms": 300_000}
        async with rig(tmp_path, keys, idp, rogue, lifetime) as r:
            manager = r.connector.service.sessions
            idle = await r.begin(idle_timeout_ms=1000)
            await r.op(idle, "run", sql="UPDATE stock SET qty = 50 WHERE id = 1")
            clock.jump(1.5)  # a client that never commits
            while manager.open_sessions():
                await manager.wait_changed()
            assert (await r.table())[0] == (1, 10)
            gone = await r.op(idle, "commit")
            assert gone["error"]["session"]["reason"] == "idle_timeout"

            old = await r.begin()
            for _ in range(3):  # never idle for 200 s, but the lifetime is 300 s
                await r.op(old, "run", sql="UPDATE stock SET qty = qty + 1 WHERE id = 2")
                clock.jump(110)
            while manager.open_sessions():
                await manager.wait_changed()
            assert (await r.table())[1] == (2, 0)
            gone = await r.op(old, "run", sql="SELECT 1")
            assert gone["error"]["session"]["reason"] == "lifetime"
            # ended ids are remembered for 10 minutes, then forgotten
            clock.jump(601)
            forgotten = await r.op(idle, "run", sql="SELECT 1")
            assert forgotten["error"]["code"] == "session.not_found"


async def test_a_lost_relay_connection_rolls_its_sessions_back(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    with trio.fail_after(60):
        async with rig(tmp_path, keys, idp, rogue) as r:
            sid = await r.begin()
            await r.op(sid, "run", sql="UPDATE stock SET qty = 0 WHERE id = 1")
            manager = r.connector.service.sessions
            await r.relay.ws.aclose()
            while manager.open_sessions():
                await manager.wait_changed()
            assert (await r.table())[0] == (1, 10)
            audit = (tmp_path / "connector" / "audit.jsonl").read_text().splitlines()
            ends = [json.loads(x)["session"] for x in audit if '"end"' in x]
            assert ends == [{"id": sid, "op": "end", "reason": "transport.lost"}]


async def test_session_caps_refuse_and_leave_connections_for_one_shot_queries(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    with trio.fail_after(120):
        async with rig(tmp_path, keys, idp, rogue) as r:
            # per identity: 8 by default
            mine = [new_session_id() for _ in range(9)]
            for sid in mine[:8]:
                assert "done" in await r.op(sid, "begin")
            over = await r.op(mine[8], "begin")
            assert over["error"]["code"] == "limits.too_many_sessions"
            assert over["error"]["limit"] == "identity"
            # per pool: 16 connections, 2 kept for one-shot queries -> 14 sessions
            others = [(f"user{i}", new_session_id()) for i in range(7)]
            answers = [await r.op(sid, "begin", token=r.token(sub)) for sub, sid in others]
            assert ["done" in a for a in answers] == [True] * 6 + [False]
            assert answers[-1]["error"]["limit"] == "connector"
            one = await r.relay.query(token=r.token(), sql="SELECT COUNT(*) FROM stock")
            await one.done.wait()
            assert one.terminal == "done", one.body
            for sid in mine[:8]:
                await r.op(sid, "rollback")
            for sub, sid in others[:6]:
                await r.op(sid, "rollback", token=r.token(sub))
            stats = {s.login: s for s in r.connector.service.pools.statistics()}
            assert stats["writer"].in_use == 0


async def test_a_drain_rolls_back_open_sessions_and_refuses_new_ones(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    with trio.fail_after(60):
        async with rig(tmp_path, keys, idp, rogue) as r:
            sid = await r.begin()
            await r.op(sid, "run", sql="UPDATE stock SET qty = 0")
            manager = r.connector.service.sessions
            (session,) = manager.open_sessions()
            await r.connector.shutdown(grace_s=5)
            assert manager.open_sessions() == []
            assert session.reason is SessionEnd.CONNECTOR_DRAINING
            assert (await r.table()) == [(1, 10), (2, 0)]
            with pytest.raises(QueryFailed) as refused:
                await manager.begin(
                    r.relay, {"id": new_session_id(), "op": "begin"}, owner=("i", "s"),
                    role=session.role, query_id="q", now_ms=0,
                )  # fmt: skip
            assert refused.value.code == "connector.draining"
            audit = (tmp_path / "connector" / "audit.jsonl").read_text().splitlines()
            ends = [json.loads(x)["session"] for x in audit if '"end"' in x]
            assert ends == [{"id": sid, "op": "end", "reason": "connector.draining"}]


#: a statement that runs until it is cancelled (a cross join of ten 10-row tables)
SLOW = "SELECT COUNT(*) FROM d a, d b, d c, d e, d f, d g, d h, d i, d j"


async def start_slow(r: Rig, sid: str) -> tuple[Session, StreamResult]:
    """Start SLOW in the session (the only one open); (the session, its stream) once it runs."""
    (session,) = r.connector.service.sessions.open_sessions()
    running = await r.relay.query(token=r.token(), sql=SLOW, session={"id": sid, "op": "run"})
    while not session.busy:
        await session.changed.wait()
    return session, running


async def test_a_second_op_while_one_runs_is_busy(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    with trio.fail_after(60):
        async with rig(tmp_path, keys, idp, rogue) as r:
            sid = await r.begin()
            session, running = await start_slow(r, sid)
            # this relay sends the second op anyway: the connector refuses it
            second = await r.op(sid, "commit")
            assert second["error"]["code"] == "session.busy"
            assert second["error"]["session"] == {"id": sid, "state": "open"}
            await r.relay.cancel(running.stream_id)
            await running.done.wait()
            assert b"query.cancelled" in running.body


async def test_the_lifetime_cancels_a_running_statement_and_rolls_back(
    tmp_path: Path,
    keys: Keys,
    idp: DevIdP,
    rogue: RogueRelay,
    clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60 + 301):  # the clock jumps 301 s
        async with rig(tmp_path, keys, idp, rogue, {"max_lifetime_ms": 300_000}) as r:
            sid = await r.begin()
            await r.op(sid, "run", sql="UPDATE stock SET qty = 1 WHERE id = 2")
            session, running = await start_slow(r, sid)
            clock.jump(301)  # past the lifetime, mid-statement
            await running.done.wait()
            last = json.loads(running.body.splitlines()[-1])
            assert last["error"]["code"] == "query.cancelled"
            assert last["error"]["session"]["reason"] == "lifetime"
            assert (await r.table()) == [(1, 10), (2, 0)]


async def test_a_rollback_preempts_the_running_statement(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    """A rollback that arrives while a statement runs (the relay's client gave up) cancels the
    statement and rolls back at once: no session.busy, no locks held until the idle timeout."""
    with trio.fail_after(60):
        async with rig(tmp_path, keys, idp, rogue) as r:
            sid = await r.begin()
            await r.op(sid, "run", sql="UPDATE stock SET qty = 1 WHERE id = 2")
            session, running = await start_slow(r, sid)
            rolled = await r.op(sid, "rollback")
            await running.done.wait()
            assert b"query.cancelled" in running.body
            # never session.busy: either the rollback ran once the cancelled statement stopped,
            # or the cancel had already ended the session (its connection discarded), and the
            # rollback says so
            if "done" in rolled:
                assert rolled["done"]["session"] == {
                    "id": sid,
                    "state": "ended",
                    "reason": "rolled_back",
                }
            else:
                assert rolled["error"]["code"] == "session.ended", rolled
                assert rolled["error"]["session"]["reason"] == "rolled_back_by_server"
            assert session.reason is not None
            assert (await r.table()) == [(1, 10), (2, 0)]
