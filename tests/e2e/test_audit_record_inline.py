"""The audit record of a query whose statement's fingerprint is already remembered is built on
the event loop (a hash, no tokenizing): no worker-thread round trip per query for it; a new
statement's record is built in a worker thread (its fingerprint tokenizes the SQL). The chain
and the records stay as they were."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import trio

from connector._readonly import remembered_fingerprint, sql_fingerprint
from connector.audit import AuditLog, verify_files
from tests.support.e2e_stack import Stack


class _CountingLimiter:
    """The read-only checker's small-statement thread lane (a trio limiter), counting the
    threads it lends."""

    def __init__(self, limiter: trio.CapacityLimiter) -> None:
        self.limiter = limiter
        self.lent = 0

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        self.lent += 1
        await self.limiter.acquire_on_behalf_of(borrower)

    def release_on_behalf_of(self, borrower: object) -> None:
        self.limiter.release_on_behalf_of(borrower)


class _Written:
    """Wakes a test when the audit log wrote a record (after the client got its DONE)."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self.chained = log.on_write
        self.changed = trio.Event()
        log.on_write = self.on_write

    def on_write(self, record: Mapping[str, Any]) -> None:
        if self.chained is not None:
            self.chained(record)
        self.changed.set()
        self.changed = trio.Event()

    async def until(self, seq: int) -> None:
        while self.log.seq < seq:
            await self.changed.wait()


async def test_a_remembered_fingerprint_builds_the_record_without_a_thread(stack: Stack) -> None:
    service = stack.connector.service
    assert service.audit is not None
    written = _Written(service.audit)
    lane = _CountingLimiter(service.read_only.small_limiter)
    service.read_only.small_limiter = lane  # type: ignore[assignment]
    sql = f"SELECT @n AS n, '{uuid.uuid4().hex}' AS tag"  # a statement no other test sent
    assert remembered_fingerprint(sql) is None
    with trio.fail_after(60):
        seq = service.audit.seq
        first = await stack.query(sql, params={"n": {"type": "int", "value": 1}})
        assert first.status == 200
        assert "done" in first.lines[-1]
        await written.until(seq + 1)
        assert remembered_fingerprint(sql) == sql_fingerprint(sql)
        # the first: the read-only check and the record's fingerprint, each in a thread
        assert lane.lent == 2
        for n in range(2, 5):
            again = await stack.query(sql, params={"n": {"type": "int", "value": n}})
            assert again.status == 200
            assert again.lines[0]["columns"]
        await written.until(seq + 4)
        assert lane.lent == 2  # remembered verdict and fingerprint: no thread since
    audit = stack.workdir / "connector" / "audit.jsonl"
    assert verify_files([audit]).ok
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    mine = [r for r in records if r["statement"].get("sql") == sql]
    assert len(mine) == 4
    assert {r["fingerprint"] for r in mine} == {sql_fingerprint(sql)}
    assert [r["outcome"]["status"] for r in mine] == ["ok"] * 4
