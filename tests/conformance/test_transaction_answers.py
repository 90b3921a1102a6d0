"""Conformance: how /transaction answers (SPEC.md 11.6) on both relays: a refused begin has its
status; once the session is open the answer is 200 and a failure, even of the first statement, is
its terminal record, with the statement's index and the session rolled back."""

from __future__ import annotations

import trio

from tests.support.conformance import Conformance
from tests.support.sessions_http import SessionClient, make_stock, stock


async def test_a_first_statement_failure_is_the_terminal_record(conf: Conformance) -> None:
    await make_stock(conf.db)
    client = SessionClient(
        conf.http, conf.relay.http_url, "demo", conf.token("bob", groups=["admins"])
    )
    with trio.fail_after(60):
        failed = await client.transaction(
            [
                {"sql": "INSERT INTO stock (id, qty) VALUES (1, 1)"},
                {"sql": "UPDATE stock SET qty = 0"},
            ]
        )
        assert failed.status == 200
        assert [line for line in failed.lines if "statement" in line and "error" not in line] == []
        assert failed.error["statement"] == 0
        assert failed.error["code"] == "sql.error"
        assert failed.error["session"]["state"] == "ended"
        assert await stock(conf.db) == [(1, 10), (2, 0)]
        # a begin the connector refuses (no role of this identity opens sessions) has its status
        reader = SessionClient(
            conf.http, conf.relay.http_url, "demo", conf.token("eve", groups=["contractors"])
        )
        refused = await reader.transaction([{"sql": "SELECT 1"}])
        assert refused.status == 403
        assert refused.error["code"].startswith("policy.")
