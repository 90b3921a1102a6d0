"""The whole path on 127.0.0.1: HTTP client -> Python relay -> connector -> tdslite, with real
tokens from the dev IdP, real keys, real TDS. Nothing of ours is mocked.

The `base` and `stack` fixtures are tests/e2e's (its conftest imports them); the pieces (users,
setup SQL, `Stack`, `Base`, key files) are shared with the chaos, conformance, worker and audit
tests."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytds
import pytest
import trio
from cryptography.hazmat.primitives import serialization

from connector.config import load_config
from connector.runtime import Connector, open_connector
from edgetds.devidp import DevIdP, open_dev_idp
from identity.oidc import default_verify_context
from tdslite import TdsServer, open_server
from tests.support.connector_stack import write_connector_config
from tests.support.relays import RelayHandle, start_python_relay

TDSLITE_USERS = """
[users.reader]
password = "reader-pw"
role = "read-only"

[users.writer]
password = "writer-pw"
role = "read-write"

[users.admin]
password = "admin-pw"
role = "admin"
"""

#: tables every e2e test can use: d = digits 0..9 (cross joins make big/slow results)
SETUP_SQL = [
    "CREATE TABLE d (n int NOT NULL)",
    "INSERT INTO d (n) VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)",
    "CREATE TABLE two (n int NOT NULL)",
    "INSERT INTO two (n) VALUES (0),(1)",
    "CREATE TABLE notes (id int NOT NULL, body nvarchar(200))",
    "INSERT INTO notes (id, body) VALUES (1, N'first'), (2, N'second')",
]


@dataclass
class Response:
    status: int
    lines: list[dict[str, Any] | list[Any]]
    raw: bytes

    @property
    def terminal(self) -> dict[str, Any]:
        last = self.lines[-1]
        assert isinstance(last, dict)
        return last

    @property
    def rows(self) -> list[list[Any]]:
        return [line for line in self.lines if isinstance(line, list)]

    @property
    def columns(self) -> list[dict[str, Any]]:
        heads = [line for line in self.lines if isinstance(line, dict) and "columns" in line]
        return heads[0]["columns"] if heads else []


@dataclass
class Stack:
    idp: DevIdP
    db: TdsServer
    relay: RelayHandle
    connector: Connector
    http: httpx.AsyncClient
    workdir: Path

    def token(self, sub: str = "alice", groups: Sequence[str] = ("analysts",), **kw: Any) -> str:
        return self.idp.mint(sub=sub, groups=list(groups), **kw)

    async def query(
        self, sql: str | None = None, *, token: str | None = None, **body: Any
    ) -> Response:
        if sql is not None:
            body["sql"] = sql
        body.setdefault("params", {})
        headers = {"Authorization": f"Bearer {token or self.token()}"}
        url = f"{self.relay.http_url}/v1/tunnels/{self.relay.tunnel}/query"
        resp = await self.http.post(url, json=body, headers=headers)
        raw = resp.content
        lines = [json.loads(line) for line in raw.decode().splitlines() if line]
        return Response(resp.status_code, lines, raw)

    def statements(self) -> list[str]:
        return self.db.statement_log.statements()


def admin_connection(db: TdsServer, **options: Any) -> pytds.Connection:
    """A python-tds connection to tdslite as its admin login (extra pytds.connect options)."""
    return pytds.connect(
        dsn=db.host,
        port=db.port,
        database=db.engine.database,
        user="admin",
        password="admin-pw",
        autocommit=True,
        login_timeout=5,
        **options,
    )


def admin_batch(db: TdsServer, statements: Sequence[str]) -> None:
    conn = admin_connection(db)
    try:
        cursor = conn.cursor()
        for sql in statements:
            cursor.execute(sql)
    finally:
        conn.close()


def write_key(path: Path, key: Any) -> Path:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return path


def write_conn1_config(
    directory: Path,
    relay: RelayHandle,
    idp: DevIdP,
    *,
    db_host: str,
    db_port: int,
    database: str,
    **options: Any,
) -> Path:
    """conn-1's key file (its key registered at `relay`) and its connector.toml in `directory`:
    dials `relay`, pins its key, trusts `idp`'s tokens; `options` as write_connector_config."""
    key = write_key(directory / "conn-1.key", relay.connector_keys["conn-1"])
    return write_connector_config(
        directory / "connector",
        relay_urls=[relay.ws_url],
        relay_public_keys=[relay.relay_public_key],
        private_key_file=key,
        issuer=idp.issuer,
        db_host=db_host,
        db_port=db_port,
        database=database,
        **options,
    )


@dataclass
class Base:
    """IdP + tdslite + Python relay, no connector yet (tests start it in or out of process)."""

    idp: DevIdP
    db: TdsServer
    relay: RelayHandle
    workdir: Path

    def write_config(self, **options: Any) -> Path:
        return write_conn1_config(
            self.workdir,
            self.relay,
            self.idp,
            db_host=self.db.host,
            db_port=self.db.port,
            database=self.db.engine.database,
            **options,
        )


async def _enter_base(contexts: AsyncExitStack, tmp_path: Path) -> Base:
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    idp = await contexts.enter_async_context(open_dev_idp(key_dir=tmp_path / "idp"))
    db = await contexts.enter_async_context(open_server(users=users, db=":memory:"))
    await trio.to_thread.run_sync(admin_batch, db, SETUP_SQL)
    relay = await contexts.enter_async_context(
        start_python_relay(
            tunnel="demo",
            connector_ids=["conn-1"],
            issuer=idp.issuer,
            limits={"query_timeout_ms": 240_000},  # the 200k-row stream under a loaded CI
        )
    )
    return Base(idp, db, relay, tmp_path)


@pytest.fixture
async def base(tmp_path: Path) -> AsyncIterator[Base]:
    with trio.CancelScope(deadline=trio.current_time() + 30) as scope:  # setup deadline
        async with AsyncExitStack() as contexts:
            result = await _enter_base(contexts, tmp_path)
            scope.deadline = trio.current_time() + 300  # only bounds a hung teardown
            yield result
    if scope.cancelled_caught:
        raise trio.TooSlowError("the e2e base stack did not start or stop in time")


@pytest.fixture
async def stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    """The whole stack, connector in process. ``@pytest.mark.parametrize("stack", [{...}],
    indirect=True)`` passes extra [connector] settings."""
    options = getattr(request, "param", {}) or {}
    with trio.CancelScope(deadline=trio.current_time() + 30) as scope:  # setup deadline
        async with AsyncExitStack() as contexts:
            b = await _enter_base(contexts, tmp_path)
            path = b.write_config(**options)
            connector = await contexts.enter_async_context(open_connector(load_config(path)))
            http = await contexts.enter_async_context(
                httpx.AsyncClient(verify=default_verify_context(), timeout=60)
            )
            await connector.wait_ready(connector.config.tunnel.ha_connections)
            # each test sets its own deadline; this one only bounds a hung teardown
            scope.deadline = trio.current_time() + 300
            yield Stack(b.idp, b.db, b.relay, connector, http, tmp_path)
    if scope.cancelled_caught:
        raise trio.TooSlowError("the e2e stack did not start or stop in time")
