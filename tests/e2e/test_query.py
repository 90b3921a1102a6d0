"""End to end through the HTTP API: results, parameters, errors, policy, tokens."""

from __future__ import annotations

import trio

from tests.support.e2e_stack import Stack


async def test_select_streams_columns_rows_done(stack: Stack) -> None:
    with trio.fail_after(20):
        resp = await stack.query("SELECT id, body FROM notes ORDER BY id")
    assert resp.status == 200
    assert [c["name"] for c in resp.columns] == ["id", "body"]
    assert resp.rows == [[1, "first"], [2, "second"]]
    done = resp.terminal["done"]
    assert done["rows"] == 2
    assert done["result_sets"] == 1
    # the session context was set (read-only) from the verified token
    ctx = await stack.query("SELECT SESSION_CONTEXT(N'edgetds.sub') AS s")
    assert ctx.rows == [["alice"]]
