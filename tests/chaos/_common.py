"""What every chaos test checks after its fault healed, and the tagged queries it sends."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from tests.support.chaos import Tally, one_query, record_result, run_load
from tests.support.waiting import eventually

#: Codes a query may end with when a fault hits it (SPEC.md sections 7.3 and 10).
FAULT_CODES = frozenset(
    {
        "transport.lost",
        "tunnel.no_connector",
        "connector.database_unavailable",
        "connector.draining",
        "relay.overloaded",
        "query.timeout",
    }
)


def counted(tag: str) -> str:
    """A short statement (10,000 rows counted) carrying the query's unique literal."""
    return f"SELECT COUNT(*) AS c, '{tag}' AS tag FROM d a, d b, d c, d e"


def streamed(tag: str) -> str:
    """A streamed result (1,000 rows, ~60 KB) carrying the query's unique literal."""
    return (
        f"SELECT a.n * 100 + b.n * 10 + c.n AS v, '{tag}' AS tag, "
        "N'padding-padding-padding' AS pad FROM d a, d b, d c"
    )


def mixed(tag: str) -> str:
    return streamed(tag) if int(tag[-1], 16) % 2 else counted(tag)


def check_and_record(
    tally: Tally,
    entries: Any,
    *,
    allowed: Collection[str] = FAULT_CODES,
    rss_kib: tuple[int, int] | None = None,
    rss_growth_mib: float = 64.0,
    **figures: Any,
) -> Mapping[str, Any]:
    """The invariants of every chaos test, then the one-line figures.

    - every query sent got exactly one outcome, and none was lost without an error;
    - typed errors are among `allowed` (the fault's own codes);
    - no query's statement ran twice, and every ok query ran exactly once (statement log);
    - connector RSS (before, peak) grew less than `rss_growth_mib`.
    """
    seen = tally.check_statement_log(list(entries))
    growth = None
    if rss_kib is not None:
        growth = round((rss_kib[1] - rss_kib[0]) / 1024, 1)
        figures["connector_rss_mib"] = round(rss_kib[1] / 1024, 1)
        figures["connector_rss_growth_mib"] = growth
    result = tally.summary(**figures)
    record_result(result)
    assert tally.accounted == tally.sent, (tally.accounted, tally.sent)
    assert tally.sent > 0
    assert not tally.lost, (tally.lost[:5], tally.samples.get("lost"))
    assert not tally.duplicated, f"executed twice: {tally.duplicated[:5]}"
    unexpected = set(tally.typed) - set(allowed)
    assert not unexpected, f"unexpected codes {unexpected}: {tally.typed} {tally.samples}"
    ran_other_than_once = [t for t, o in tally.tags.items() if o == "ok" and seen[t] != 1]
    assert not ran_other_than_once, f"ok but not run exactly once: {ran_other_than_once[:5]}"
    if growth is not None:
        assert growth < rss_growth_mib, f"connector RSS grew {growth} MiB"
    return result


@asynccontextmanager
async def under_load(
    chaos: Any, tally: Tally, sql_for: Callable[[str], str] = mixed, *, workers: int = 4
) -> AsyncIterator[None]:
    """One query must succeed first; then `workers` clients query until the block exits."""
    assert (await one_query(chaos.http, chaos.query_url, chaos.token, tally, sql_for))[0] == "ok"
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            functools.partial(
                run_load, chaos.http, chaos.query_url, chaos.token, tally, stop, sql_for,
                workers=workers,
            )
        )  # fmt: skip
        try:
            yield
        finally:
            stop.set()


async def wait_ok_after(tally: Tally, when: float) -> float:
    """Wait until a query succeeded after `when` (the load is running); returns the seconds."""
    await eventually(lambda: tally.first_ok_after(when) is not None)
    took = tally.first_ok_after(when)
    assert took is not None
    return took
