"""Stopping queries on the server: client disconnect (relay CANCEL) and timeouts. The slow query
is a 10^9-row cross join count; tdslite's statement log must show it cancelled, not finished."""

from __future__ import annotations

import httpx
import trio

from tests.support.e2e_stack import Stack
from tests.support.waiting import eventually

SLOW = "SELECT COUNT(*) AS c FROM d a, d b, d c, d e, d f, d g, d h, d i, d j"


async def _outcome_of(stack: Stack, sql: str) -> dict:
    """Wait until tdslite logged the statement's outcome."""

    def entries() -> list[dict]:
        return [e for e in stack.db.statement_log.entries if e["statement"] == sql]

    await eventually(lambda: bool(entries()))
    return entries()[0]["outcome"]


async def test_client_disconnect_cancels_the_query_on_the_server(stack: Stack) -> None:
    url = f"{stack.relay.http_url}/v1/tunnels/demo/query"
    headers = {"Authorization": f"Bearer {stack.token()}"}
    with trio.fail_after(45):
        async with httpx.AsyncClient(timeout=30) as client:
            with trio.move_on_after(1.0):  # the client gives up and goes away
                await client.post(url, json={"sql": SLOW, "params": {}}, headers=headers)
        started = trio.current_time()
        outcome = await _outcome_of(stack, SLOW)
        stopped_after = trio.current_time() - started
    assert outcome.get("cancelled") is True, outcome
    assert stopped_after < 20  # seconds, generous for loaded CI machines
    # the connector still serves
    with trio.fail_after(20):
        resp = await stack.query("SELECT COUNT(*) AS c FROM notes")
    assert resp.rows == [[2]]
    with trio.fail_after(10):
        await eventually(lambda: stack.connector.service.counts.get("query.cancelled", 0) >= 1)


async def test_timeout_stops_the_query_and_answers_504(stack: Stack) -> None:
    with trio.fail_after(30):
        started = trio.current_time()
        resp = await stack.query(SLOW, timeout_ms=800)
        took = trio.current_time() - started
        outcome = await _outcome_of(stack, SLOW)
    assert resp.status == 504
    assert resp.terminal["error"]["code"] == "query.timeout"
    assert took < 15  # the relay-side deadline is the request's 0.8 s + grace
    assert outcome.get("cancelled") is True, outcome
