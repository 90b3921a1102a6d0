"""Sessions over HTTP for tests (SPEC.md 11.5, 11.6): calls on a relay, and tdslite's truth.

`SessionClient` speaks the session endpoints of either relay; `stock` reads the table the
session tests move stock in, through an admin connection of its own (committed rows only)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from tdslite import TdsServer
from tests.support.e2e_stack import admin_batch, admin_connection

__all__ = ["STOCK_SQL", "Answer", "SessionClient", "make_stock", "stock"]

STOCK_SQL = [
    "CREATE TABLE stock (id int NOT NULL PRIMARY KEY, qty int NOT NULL)",
    "INSERT INTO stock (id, qty) VALUES (1, 10), (2, 0)",
]


@dataclass
class Answer:
    status: int
    headers: httpx.Headers
    lines: list[Any]

    @property
    def body(self) -> dict[str, Any]:
        """The JSON object of a non-NDJSON answer (or the last NDJSON line)."""
        last = self.lines[-1]
        assert isinstance(last, dict), self.lines
        return last

    @property
    def error(self) -> dict[str, Any]:
        err = self.body.get("error")
        assert isinstance(err, dict), self.lines
        return err

    @property
    def rows(self) -> list[list[Any]]:
        return [line for line in self.lines if isinstance(line, list)]


class SessionClient:
    """One user's calls on ``/v1/tunnels/{tunnel}/sessions...`` and ``/transaction``."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, tunnel: str, token: str) -> None:
        self.http = http
        self.base = f"{base_url}/v1/tunnels/{tunnel}"
        self.token = token

    async def _call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> Answer:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        resp = await self.http.request(method, self.base + path, json=body, headers=headers)
        lines = [json.loads(line) for line in resp.content.decode().splitlines() if line]
        return Answer(resp.status_code, resp.headers, lines)

    async def begin(self, **body: Any) -> Answer:
        return await self._call("POST", "/sessions", body)

    async def open(self, **body: Any) -> str:
        """Begin; the session id (asserting 201)."""
        answer = await self.begin(**body)
        assert answer.status == 201, answer.lines
        sid = answer.body["session"]
        assert isinstance(sid, str)
        return sid

    async def query(self, sid: str, sql: str, token: str | None = None, **body: Any) -> Answer:
        return await self._call("POST", f"/sessions/{sid}/query", {"sql": sql, **body}, token)

    async def op(self, sid: str, op: str, token: str | None = None, **body: Any) -> Answer:
        return await self._call("POST", f"/sessions/{sid}/{op}", body, token)

    async def delete(self, sid: str) -> Answer:
        return await self._call("DELETE", f"/sessions/{sid}")

    async def transaction(self, statements: list[dict[str, Any]], **body: Any) -> Answer:
        return await self._call("POST", "/transaction", {"statements": statements, **body})


async def make_stock(db: TdsServer) -> None:
    await trio.to_thread.run_sync(admin_batch, db, STOCK_SQL)


async def stock(db: TdsServer) -> list[tuple[int, int]]:
    """The stock table as tdslite holds it (committed rows), by id. The read waits for a
    writer's locks (READ COMMITTED); a cancelled caller does not wait with it."""

    def read() -> list[tuple[int, int]]:
        conn = admin_connection(db)
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT id, qty FROM stock ORDER BY id")
            return [(int(a), int(b)) for a, b in cursor.fetchall()]
        finally:
            conn.close()

    return await trio.to_thread.run_sync(read, abandon_on_cancel=True)
