"""Kysely, the SQL query builder, through the tunnel on BOTH relays (Python and Worker under
workerd): real Kysely with relay/worker/src/kysely.js (EdgetdsDialect) on Node, over HTTP to the
relay, a real connector and tdslite, with dev-IdP tokens. The suites are node:test files in this
directory (queries.test.mjs, transactions.test.mjs); each test here runs one of them against one
relay and requires every one of its tests to pass."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import trio

from tests.support.conformance import Conformance
from tests.support.e2e_stack import admin_batch
from tests.support.worker_relay import ROOT
from tests.support.wrangler import NODE

HERE = Path(__file__).parent

#: The tables the suites read and write (the conformance stack adds d, two and notes).
KYSELY_SQL = [
    "CREATE TABLE authors (id int IDENTITY(1,1) NOT NULL PRIMARY KEY, name nvarchar(100) NOT NULL)",
    "CREATE TABLE books (id int IDENTITY(1,1) NOT NULL PRIMARY KEY,"
    " author_id int NOT NULL REFERENCES authors (id), title nvarchar(200) NOT NULL,"
    " price decimal(10,2) NULL)",
    "CREATE TABLE vals (id int NOT NULL PRIMARY KEY, big bigint NULL, at datetime2(3) NULL,"
    " at7 datetime2(7) NULL, bytes varbinary(max) NULL, amount decimal(38,10) NULL, flag bit NULL,"
    " ratio float NULL, note nvarchar(max) NULL, day date NULL, uid uniqueidentifier NULL)",
    "CREATE TABLE stock (id int NOT NULL PRIMARY KEY, item nvarchar(50) NOT NULL,"
    " qty int NOT NULL)",
    "INSERT INTO authors (name) VALUES (N'Ada'), (N'Brian')",
    "INSERT INTO books (author_id, title, price) VALUES (1, N'Notes', 12.50),"
    " (1, N'Engines', 30.00), (2, N'C', 45.25)",
    "INSERT INTO stock (id, item, qty) VALUES (1, N'apples', 10), (2, N'pears', 0)",
]

#: Sessions (SPEC.md 7.4, 11.5) are not served by the relays of this branch yet.
SESSIONS_MISSING = "the relays have no /v1/tunnels/{t}/sessions endpoints yet (SPEC.md 11.5)"


def run_suite(conf: Conformance, suite: str) -> dict[str, int]:
    """Run one node:test suite against the stack; returns its TAP summary counts."""
    env = {
        **os.environ,
        "EDGETDS_URL": conf.relay.http_url,
        "EDGETDS_TUNNEL": conf.relay.tunnel,
        "EDGETDS_WRITER_TOKEN": conf.token(sub="kim", groups=["admins"]),
        "EDGETDS_READER_TOKEN": conf.token(sub="alice", groups=["analysts"]),
    }
    result = subprocess.run(
        [str(NODE), "--test", "--test-reporter=tap", str(HERE / suite)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    summary = {k: int(v) for k, v in re.findall(r"^# (\w+) (\d+)$", result.stdout, re.M)}
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert summary.get("fail") == 0, summary
    return summary


async def setup_tables(conf: Conformance) -> None:
    await trio.to_thread.run_sync(admin_batch, conf.db, KYSELY_SQL)


async def test_kysely_queries(conf: Conformance) -> None:
    """Joins, aggregates, paging, insert/update/delete with OUTPUT, typed values, raw sql,
    streaming a 10,000-row select, introspection, and error codes."""
    await setup_tables(conf)
    summary = await trio.to_thread.run_sync(run_suite, conf, "queries.test.mjs")
    # skipped: OUTPUT deleted.* (UPDATE, DELETE) and introspection, which tdslite does not run yet
    assert (summary["pass"], summary["skipped"]) == (12, 3), summary


@pytest.mark.skip(reason=SESSIONS_MISSING)
async def test_kysely_transactions(conf: Conformance) -> None:
    """db.transaction() commits / rolls back on throw, isolation, savepoints, controlled
    transactions, streaming in a transaction, a read-only role's write refused."""
    await setup_tables(conf)
    summary = await trio.to_thread.run_sync(run_suite, conf, "transactions.test.mjs")
    assert (summary["pass"], summary["skipped"]) == (8, 0), summary
