"""Sessions through the Worker with the REAL connector (connector/) and tdslite behind it: a
session keeps its transaction while the Durable Object hibernates (the routing comes back from the
connector socket's attachment), and a reset of the object ends it at the connector (rolled back)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.support.e2e_stack import admin_connection
from tests.support.worker_relay import idle_until_hibernated
from tests.worker.helpers import bearer, ndjson
from tests.worker.test_real_connector import RealStack, real_stack


class SessionStack(RealStack):
    """The real stack, plus the session calls of one admin identity and tdslite's truth."""

    def url(self, *parts: str) -> str:
        base = f"{self.relay.handle.http_url}/v1/tunnels/demo/sessions"
        return "/".join([base, *parts])

    def token(self) -> str:
        return self.idp.mint(sub="alice", groups=["admins"])

    async def post(self, *parts: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return await self.http.post(self.url(*parts), json=body or {}, headers=bearer(self.token()))

    async def committed_notes(self) -> int:
        def read() -> int:
            conn = admin_connection(self.db)
            try:
                cursor = conn.cursor()
                cursor.execute("SELECT COUNT(*) FROM notes")
                return int(cursor.fetchone()[0])
            finally:
                conn.close()

        return await trio.to_thread.run_sync(read)

    def audited_ends(self) -> list[dict[str, Any]]:
        lines = (self.directory / "audit.jsonl").read_text().splitlines()
        return [json.loads(x)["session"] for x in lines if '"op": "end"' in x or '"op":"end"' in x]


@asynccontextmanager
async def session_stack(tmp_path: Path) -> AsyncIterator[SessionStack]:
    async with real_stack(tmp_path) as stack:
        yield SessionStack(**vars(stack))


@pytest.mark.timeout(90)
async def test_a_session_keeps_its_transaction_while_the_object_hibernates(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with session_stack(tmp_path) as stack:
            begun = await stack.post(body={"timeout_ms": 60_000})
            assert begun.status_code == 201, begun.text
            sid = begun.json()["session"]
            insert = {"sql": "INSERT INTO notes (id, body) VALUES (3, N'third')"}
            response = await stack.post(sid, "query", body=insert)
            assert response.status_code == 200, response.text
            before = await stack.relay.do_state(stack.http)
            await idle_until_hibernated()
            count = await stack.post(sid, "query", body={"sql": "SELECT COUNT(*) AS c FROM notes"})
            assert count.status_code == 200, count.text
            assert ndjson(count.text)[1] == [3]  # its own uncommitted row: the same transaction
            after = await stack.relay.do_state(stack.http)
            assert after["instance"] != before["instance"], "the object did not hibernate"
            commit = await stack.post(sid, "commit")
            assert commit.json() == {"session": sid, "state": "ended", "reason": "committed"}
            assert await stack.committed_notes() == 3
            assert stack.connector.reconnects == 0


async def test_a_reset_of_the_object_rolls_the_session_back_at_the_connector(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with session_stack(tmp_path) as stack:
            begun = await stack.post()
            assert begun.status_code == 201, begun.text
            sid = begun.json()["session"]
            insert = {"sql": "INSERT INTO notes (id, body) VALUES (4, N'fourth')"}
            assert (await stack.post(sid, "query", body=insert)).status_code == 200
            manager = stack.connector.service.sessions
            assert len(manager.open_sessions()) == 1
            await stack.http.post(stack.relay.hook_url("abort"))
            while manager.open_sessions():
                await manager.wait_changed()
            assert await stack.committed_notes() == 2
            assert stack.audited_ends() == [{"id": sid, "op": "end", "reason": "transport.lost"}]
            gone = await stack.post(sid, "commit")
            assert gone.status_code == 410, gone.text
            assert gone.json()["error"]["session"]["reason"] == "transport.lost"
            assert await stack.committed_notes() == 2
