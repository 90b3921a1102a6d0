"""The direct+preamble baseline (bench/tunnel.py) does the connector's per-query database work: the
read-only session keys on a request that resets the session, with a plain SELECT in that same
request. Each slot reuses its connection, so without the reset the second query on a slot would
fail (read-only keys cannot be set again)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

import tdslite
from bench.stack import open_demo_stack
from connector.execute import preamble_batch
from edgetds.loadtest import Plan, TokenSource, parse_scenario, run_loadtest
from edgetds.loadtest.targets import DirectSpec
from tests.support.connector_stack import TDSLITE_USERS
from tests.support.wiretap import RPC, Message, WireTap


async def test_direct_like_connector_resets_every_query(tmp_path: Path) -> None:
    scenario = parse_scenario(
        {
            "name": "preamble",
            "seed": 1,
            "load": {"concurrency": 2, "count": 20},
            "queries": [
                {"name": "echo", "sql": "SELECT @n AS n", "params": {"n": {"int": [1, 9]}}}
            ],
        }
    )
    with trio.fail_after(60):
        async with open_demo_stack(tmp_path / "stack", connector="none") as stack:
            tokens = TokenSource.from_dev_idp(
                stack.idp_key_dir, scenario.identity, users=2, expires_in=300
            )
            plan = Plan(scenario=scenario, tokens=tokens, direct=stack.direct, live=False)
            runs = await run_loadtest(replace(plan, direct_like_connector=True))
    [run] = runs.values()
    assert run.count == 20
    assert run.errors == 0, run.errors_by_code
    assert run.rows == 20


async def _direct_run(tmp_path: Path, sql: str) -> tuple[Any, list[Message]]:
    """Five queries of ``sql`` by the direct+preamble baseline against tdslite behind a wire tap:
    the run and the request messages the baseline sent."""
    scenario = parse_scenario(
        {
            "name": "shape",
            "seed": 1,
            "load": {"concurrency": 1, "count": 5},
            "queries": [{"name": "q", "sql": sql, "params": {"n": {"int": [1, 9]}}}],
        }
    )
    users = _users_file(tmp_path)
    with trio.fail_after(60):
        async with tdslite.open_server(users=users) as server, trio.open_nursery() as nursery:
            tap = WireTap(server.port)
            await nursery.start(tap.serve)
            direct = DirectSpec("127.0.0.1", tap.port, "owner", "owner-pw", server.engine.database)
            await trio.to_thread.run_sync(_create_table, direct)
            tap.messages.clear()
            plan = Plan(scenario=scenario, direct=direct, live=False, direct_like_connector=True)
            [run] = (await run_loadtest(plan)).values()
            nursery.cancel_scope.cancel()
    return run, tap.requests()


def _users_file(directory: Path) -> Path:
    """tdslite's logins: the connector's reader and writer, and an owner that may create tables."""
    directory.mkdir()
    users = directory / "users.toml"
    users.write_text(TDSLITE_USERS + '[users.owner]\npassword = "owner-pw"\nrole = "admin"\n')
    return users


def _create_table(direct: DirectSpec) -> None:
    with direct.connect(timeout=10, appname="test") as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TABLE t (n int)")


async def test_direct_like_connector_sends_what_the_connector_sends(tmp_path: Path) -> None:
    """The baseline does the connector's database work: a plain SELECT with its session context in
    ONE request (two sp_executesql RPCs, the reset flag on it), any other statement in two."""
    run, requests = await _direct_run(tmp_path / "select", "SELECT @n AS n")
    assert run.errors == 0, run.errors_by_code
    assert run.rows == 5
    assert len(requests) == 5
    for message in requests:
        assert message.type == RPC
        assert message.reset
        assert [name for name, _ in message.calls] == ["sp_executesql", "sp_executesql"]
        assert message.calls[0][1] == preamble_batch()
        assert message.calls[1][1] == "SELECT @n AS n"

    run, requests = await _direct_run(tmp_path / "insert", "INSERT INTO t VALUES (@n)")
    assert run.errors == 0, run.errors_by_code
    assert len(requests) == 10
    for context, statement in zip(requests[::2], requests[1::2], strict=True):
        assert context.reset
        assert [value for _, value in context.calls] == [preamble_batch()]
        assert not statement.reset
        assert [value for _, value in statement.calls] == ["INSERT INTO t VALUES (@n)"]
