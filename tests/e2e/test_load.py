"""Many queries at once over one connector (two HA connections, one pool per role)."""

from __future__ import annotations

import pytest
import trio

from tests.support.e2e_stack import Stack
from tests.support.waiting import eventually


@pytest.mark.parametrize("stack", [{"max_concurrent_queries": 256}], indirect=True)
async def test_200_concurrent_queries_over_one_connector(stack: Stack) -> None:
    tokens = [stack.token(sub=f"user{i}") for i in range(8)]  # 25 each: below the per-identity caps
    results: dict[int, list] = {}

    async def one(i: int) -> None:
        resp = await stack.query(
            "SELECT @i AS i, COUNT(*) AS c FROM d a, d b",
            token=tokens[i % 8],
            params={"i": {"type": "int", "value": i}},
        )
        assert resp.status == 200, resp.lines
        assert "done" in resp.terminal
        results[i] = resp.rows

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
    assert len(results) == 200
    assert all(results[i] == [[i, 100]] for i in range(200))
    # both HA connections carried the queries (counted just after each terminal frame left)
    links = stack.connector.statistics
    with trio.fail_after(10):
        await eventually(lambda: sum(link.served for link in links().links) == 200)
    assert stack.connector.service.counts == {"ok": 200}
    assert len(links().links) == 2
    stats = {p.login: p for p in stack.connector.service.pools.statistics()}
    assert stats["reader"].opened <= 16  # bounded by pool_size, reused across queries
