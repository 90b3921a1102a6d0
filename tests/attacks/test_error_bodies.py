"""What a client is told when the failure is on the far side, on BOTH relays with real connector
processes: the error record names the failure class (its code and a message that says what to
do) and the query id, never an internal host, port, login, file path or SQL Server's answer to a
login, TLS or session step. The connector's log has that detail under the same query id.

Failures driven for real: a wrong database password (SQL Server error 18456), the database down
(port closed), TLS to SQL Server with a certificate the connector does not trust, and a session
the server refuses at the connector's reset + session-context step (916, which names the login;
tdslite's engine, the SQL Server stand-in, refuses it as SQL Server does once the login's access
to the database is revoked). And a relay that cannot load the issuer's keys: the body says so
without the JWKS URL; the relay's log has it, under the query id the body names.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio
import trustme

import tdslite
from tdslite.engine import Engine, SqlError, User, load_users
from tests.support.chaos import HYGIENE
from tests.support.chaos_stack import Chaos, open_relay
from tests.support.connector_keys import closed_port
from tests.support.relays import start_python_relay
from tests.support.waiting import eventually
from tests.support.worker_relay import open_worker_relay, workerd_log

CLIENT_SQL = "SELECT n FROM d"


class _RevokedEngine(Engine):
    """tdslite's engine where the logins lost access to database ``sales`` (a statement that
    reads it is refused with error 916, worded as SQL Server words it: it names the login) and,
    with ``session_refused``, to their own database too, after they logged in: then the session's
    first request (the connector's reset + session-context step) is refused the same way."""

    def __init__(self, users: Path, *, session_refused: bool) -> None:
        super().__init__(":memory:", load_users(users))
        self.session_refused = session_refused

    def open_session(self, user: User, *, database: str | None = None) -> Any:
        session = super().open_session(user, database=database)
        execute, run_preamble = session.execute, session.run_preamble

        def no_access(name: str) -> SqlError:
            return SqlError(
                916,
                f'The server principal "{user.login}" is not able to access the database '
                f'"{name}" under the current security context.',
                state=1,
                severity=14,
            )

        def refused(sql: str, params: Sequence[Any] = ()) -> Iterator[Any]:
            setup = "sp_set_session_context" in sql
            if (setup and self.session_refused) or (not setup and "sales." in sql):
                raise no_access("sales" if not setup else session.database)
            yield from execute(sql, params)

        def refused_preamble(plan: Any) -> None:
            # the session context as the wire layer runs it on its event loop
            if self.session_refused:
                raise no_access(session.database)
            run_preamble(plan)

        session.execute = refused
        session.run_preamble = refused_preamble
        return session


@dataclass
class _Case:
    """One way the database side fails: how the connector's config points at it, and what its
    log must say about it."""

    name: str
    edit: Callable[[str], str]
    logins: dict[str, tuple[str, str]] | None
    detail: tuple[str, ...]


def _database(host: str, server: Any, *extra: str) -> Callable[[str], str]:
    """Point [database] at ``host`` and a tdslite ``server``'s port and database (or a port)."""
    port = server if isinstance(server, int) else server.port

    def edit(text: str) -> str:
        lines = []
        for line in text.splitlines():
            if line.startswith("host = "):
                line = f'host = "{host}"'
            elif line.startswith("port = "):
                line = f"port = {port}"
            elif line.startswith("database = ") and not isinstance(server, int):
                line = f"database = {json.dumps(server.engine.database)}"
            lines.append(line)
            if line.startswith("login_timeout_s"):
                lines.extend(extra)
        return "\n".join(lines) + "\n"

    return edit


def _client_body_is_clean(body: str, query_id: str, forbidden: Sequence[str]) -> dict[str, Any]:
    """The error record (JSON, or the terminal NDJSON line) names the class and query id only."""
    record: dict[str, Any] = json.loads(body.strip().splitlines()[-1])["error"]
    assert record["code"] == "connector.database_unavailable", body
    assert record["query_id"] == query_id, body
    assert query_id in record["message"], body  # where the detail is to be found
    rest = body.replace(query_id, "")
    for needle in forbidden:
        assert needle not in rest, (needle, body)
    return record


def _logged_detail(log: Path, query_id: str) -> str:
    """The detail the connector logged under ``query_id``."""
    details = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("query_id") == query_id and "detail" in entry:
                details.append(str(entry["detail"]))
    assert len(details) == 1, (query_id, details)
    return details[0]


async def test_a_failing_database_is_named_by_class_never_by_address(
    chaos: Chaos, relay_kind: str
) -> None:
    tls = trustme.CA()
    cert = tls.issue_cert("localhost", common_name="localhost")
    files = chaos.workdir / "db-tls"
    files.mkdir()
    cert.cert_chain_pems[0].write_to_path(str(files / "cert.pem"))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(files / "cert.pem"), append=True)
    cert.private_key_pem.write_to_path(str(files / "key.pem"))
    trustme.CA().cert_pem.write_to_path(str(files / "other-ca.pem"))
    down = closed_port()
    with trio.fail_after(240):
        async with (
            AsyncExitStack() as servers,
            open_relay(relay_kind, chaos, connector_ids=("conn-1",)) as relay,
        ):
            with_tls = await servers.enter_async_context(
                tdslite.open_server(
                    users=chaos.db.users,
                    tls_cert=files / "cert.pem",
                    tls_key=files / "key.pem",
                )
            )
            engine = _RevokedEngine(chaos.db.users, session_refused=True)
            servers.callback(engine.close)
            revoked = await servers.enter_async_context(
                tdslite.open_server(users=chaos.db.users, engine=engine)
            )
            cases = [
                _Case(
                    "wrong password",
                    _database("127.0.0.1", chaos.db.port),
                    {"reader": ("reader", "not-the-password"), "writer": ("writer", "writer-pw")},
                    ("18456", "'reader'", f"127.0.0.1:{chaos.db.port}"),
                ),
                _Case(
                    "database down",
                    _database("127.0.0.1", down),
                    None,
                    ("cannot reach SQL Server", f"127.0.0.1:{down}"),
                ),
                _Case(
                    "untrusted TLS certificate",
                    _database(
                        "localhost",
                        with_tls,
                        f"cafile = {json.dumps(str(files / 'other-ca.pem'))}",
                        "validate_host = true",
                    ),
                    None,
                    ("TLS", f"localhost:{with_tls.port}", "certificate verify failed"),
                ),
                _Case(
                    "session refused",
                    _database("127.0.0.1", revoked),
                    None,
                    ("SQL Server error 916", '"reader"'),
                ),
            ]
            forbidden = [
                "127.0.0.1",
                "localhost",
                "reader",
                "writer",
                str(chaos.workdir),
                "18456",
                "916",
                "certificate",
                "Login failed",
                *(str(p) for p in (chaos.db.port, down, with_tls.port, revoked.port)),
            ]
            log = chaos.workdir / "conn-1.log"
            for case in cases:
                query_id = str(uuid.uuid4())
                async with chaos.connector("conn-1", edit=case.edit, logins=case.logins):
                    await chaos.wait_connections(2)
                    response = await chaos.http.post(
                        chaos.query_url,
                        json={"sql": CLIENT_SQL, "query_id": query_id},
                        headers={"Authorization": f"Bearer {chaos.token}"},
                    )
                await _no_connections(chaos)
                assert response.status_code == 503, (case.name, response.text)
                _client_body_is_clean(response.text, query_id, forbidden)
                detail = _logged_detail(log, query_id)
                for needle in case.detail:
                    assert needle in detail, (case.name, needle, detail)
    assert relay.kind == relay_kind


async def _no_connections(chaos: Chaos) -> None:
    """Wait until the relay (over HTTP) has dropped the killed connector's connections."""

    async def none() -> bool:
        return not await chaos.connections()

    await eventually(none)


async def test_issuer_keys_that_cannot_be_loaded_are_not_described_to_the_client(
    chaos: Chaos, relay_kind: str, relay_log: Path
) -> None:
    port = closed_port()
    jwks_uri = f"http://127.0.0.1:{port}/internal/jwks.json"
    with trio.fail_after(120):
        if relay_kind == "python":
            async with start_python_relay(
                tunnel="demo", connector_ids=["conn-1"], issuer=chaos.idp.issuer, jwks_uri=jwks_uri
            ) as relay:
                response = await _status(relay.http_url, chaos.token)
            log = await trio.Path(relay_log).read_text()
        else:
            async with open_worker_relay(
                tunnel="demo", connector_ids=["conn-1"], issuer=chaos.idp.issuer, jwks_uri=jwks_uri
            ) as worker:
                response = await _status(worker.handle.http_url, chaos.token)
                log = workerd_log(worker)
            await trio.Path(chaos.workdir / "workerd-jwks.log").write_text(log)
            HYGIENE.file(chaos.workdir / "workerd-jwks.log")
    assert response.status_code == 503, response.text  # the same at both relays
    record = response.json()["error"]
    assert record["code"] == "internal"
    query_id = record["query_id"]
    assert query_id in record["message"]
    assert "keys are unavailable" in record["message"]
    for needle in ("127.0.0.1", str(port), "/internal/jwks.json", "jwks"):
        assert needle not in response.text, (needle, response.text)
    lines = [line for line in log.splitlines() if query_id in line]
    assert lines, log[-2000:]
    assert any(f"127.0.0.1:{port}" in line for line in lines), lines


async def _status(http_url: str, token: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(
            f"{http_url}/v1/tunnels/demo/status", headers={"Authorization": f"Bearer {token}"}
        )


async def test_a_statement_error_that_names_the_login_keeps_its_number_not_the_name(
    chaos: Chaos, relay_kind: str
) -> None:
    # the client's own SQL failed: sql.error with SQL Server's number and message (useful to the
    # app), the login's name and the server's host replaced
    engine = _RevokedEngine(chaos.db.users, session_refused=False)
    with trio.fail_after(120):
        async with (
            open_relay(relay_kind, chaos, connector_ids=("conn-1",)),
            tdslite.open_server(users=chaos.db.users, engine=engine) as server,
            chaos.connector("conn-1", edit=_database("127.0.0.1", server)),
        ):
            await chaos.wait_connections(2)
            query_id = str(uuid.uuid4())
            response = await chaos.http.post(
                chaos.query_url,
                json={"sql": "SELECT id FROM sales.dbo.orders", "query_id": query_id},
                headers={"Authorization": f"Bearer {chaos.token}"},
            )
            ok = await chaos.http.post(
                chaos.query_url,
                json={"sql": "SELECT 1 AS n"},
                headers={"Authorization": f"Bearer {chaos.token}"},
            )
    engine.close()
    assert response.status_code == 422, response.text
    record = response.json()["error"]
    assert record == {
        "code": "sql.error",
        "message": 'SQL Server error 916: The server principal "<login>" is not able to access '
        'the database "sales" under the current security context.',
        "query_id": query_id,
        "sql": {"number": 916, "state": 1, "class": 14},
    }
    assert ok.status_code == 200, ok.text  # the session was fine: the connection is reused
