"""One log format for every serving process, run for real: `edgetds relay serve`, `connector
run`, `tdslite serve` and `dev-idp serve` write JSON lines on stderr (hypercorn's own lines
included), text on a terminal; per-query lines are debug and a `queries.summary` line is info;
on SIGTERM every connection logs its end and `stopped` is the last line; a refused dial names
"Connection refused"; no token and no parameter value is ever in the output.
"""

from __future__ import annotations

import json
import logging
import os
import pty
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from connector.config import load_config
from connector.runtime import open_connector
from identity.keys import generate_key_files
from logsetup import JsonFormatter, QuerySummary, TextFormatter, record_fields
from tests.support.connector_keys import closed_port
from tests.support.connector_stack import TDSLITE_USERS
from tests.support.ops_stack import (
    Stack,
    open_stack,
    post_query,
    write_relay_toml,
    write_stack_config,
)
from tests.support.processes import OutputLines, first_line

EDGETDS = [sys.executable, "-m", "edgetds"]
SECRET_PARAM = "p4ram-value-never-logged"


def records(lines: Sequence[str]) -> list[dict[str, Any]]:
    """Every line as a JSON object (fails on the first line that is not one)."""
    out = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(record, dict), line
        for member in ("ts", "level", "logger", "msg"):
            assert member in record, (member, line)
        assert record["ts"].endswith("Z"), line
        out.append(record)
    return out


@pytest.fixture
def tds_users_file(tmp_path: Path) -> Path:
    path = tmp_path / "tds-users.toml"
    path.write_text(TDSLITE_USERS)
    return path


def event(name: str) -> Any:
    """A line filter: the JSON line of event ``name``."""
    return lambda line: f'"event": "{name}"' in line


@asynccontextmanager
async def running(
    argv: Sequence[str], nursery: trio.Nursery
) -> AsyncIterator[tuple[trio.Process, OutputLines]]:
    """``edgetds ARGV`` with its stderr read line by line; killed if still up at the end."""
    process = await trio.lowlevel.open_process(
        [*EDGETDS, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    err = OutputLines()
    assert process.stderr is not None
    nursery.start_soon(err.read_from, process.stderr)
    try:
        yield process, err
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


async def stop(process: trio.Process, err: OutputLines) -> list[dict[str, Any]]:
    """SIGTERM, wait for the exit; every stderr line as JSON, `stopped` the last one."""
    process.send_signal(signal.SIGTERM)
    assert await process.wait() == 0, "\n".join(err.lines[-20:])
    lines = records(await err.wait_ended())
    assert lines[-1]["event"] == "stopped", lines[-3:]
    assert lines[-1]["reason"], lines[-1]
    return lines


async def start_relay(
    stack: Stack, nursery: trio.Nursery, *extra: str
) -> tuple[trio.Process, OutputLines, str, str]:
    relay_key = generate_key_files(stack.directory / "relay-keys", "relay")
    toml = stack.directory / "relay.toml"
    write_relay_toml(
        toml, relay_key=relay_key, connector_keys=[stack.key.public_key], issuer=stack.idp.issuer
    )
    process, err = await nursery.start(_hold, ["relay", "serve", "--config", str(toml), *extra])
    url = (await first_line(process)).removeprefix("relay listening on ")
    return process, err, url, relay_key.public_key


async def summaries(err: OutputLines, queries: int) -> list[dict[str, Any]]:
    """The `queries.summary` lines, once they count ``queries`` queries in all."""
    count = 1
    while True:
        lines = records(await err.wait_for(event("queries.summary"), count=count))
        if sum(r["queries"] for r in lines) >= queries:
            return lines
        count = len(lines) + 1


async def _hold(
    argv: Sequence[str], *, task_status: trio.TaskStatus[tuple[trio.Process, OutputLines]]
) -> None:
    async with trio.open_nursery() as nursery, running(argv, nursery) as (process, err):
        task_status.started((process, err))
        await process.wait()
        await err.wait_ended()


async def test_relay_and_connector_logs_are_json_with_summaries_and_a_stopped_line(
    tmp_path: Path,
) -> None:
    async with open_stack(tmp_path, relay=False) as stack, trio.open_nursery() as nursery:
        with trio.fail_after(90):
            relay, relay_err, url, relay_pub = await start_relay(
                stack, nursery, "--log-summary-s", "0.2"
            )
            config = write_stack_config(
                stack,
                relay_urls=[url.replace("http://", "ws://")],
                relay_public_keys=[relay_pub],
                ha_connections=2,
            )
            # the ops endpoint runs hypercorn inside the connector: its lines go through ours
            ops = f'\n[ops]\nlisten = "127.0.0.1:{closed_port()}"\n'
            config.write_text(config.read_text() + ops)
            connector, connector_err = await nursery.start(
                _hold,
                ["connector", "run", "--config", str(config), "--log-level", "debug",
                 "--log-summary-s", "0.2"],
            )  # fmt: skip
            await relay_err.wait_for(event("connector.ready"), count=2)
            token = stack.token()
            async with httpx.AsyncClient(timeout=20) as client:
                for _ in range(3):
                    response = await client.post(
                        f"{url}/v1/tunnels/demo/query",
                        json={"sql": "SELECT @v AS v", "params": {"v": SECRET_PARAM}},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    assert response.status_code == 200, response.text
                    assert SECRET_PARAM in response.text
            relay_summaries = await summaries(relay_err, 3)
            connector_summaries = await summaries(connector_err, 3)
            connector_lines = await stop(connector, connector_err)
            relay_lines = await stop(relay, relay_err)
    relay_text, connector_text = "\n".join(relay_err.lines), "\n".join(connector_err.lines)
    for lines in (relay_summaries, connector_summaries):
        assert sum(r["queries"] for r in lines) == 3, lines
        for summary in lines:
            assert summary["level"] == "info"
            assert summary["errors"] == 0, summary
            assert 0 < summary["p50_ms"] <= summary["p99_ms"], summary
    # per-query lines: debug, so the connector (--log-level debug) has them, the relay (info) not
    assert [r["level"] for r in connector_lines if r.get("event") == "query"] == ["debug"] * 3
    assert not [r for r in relay_lines if r.get("event") == "query"]
    # structured fields are members, not key=value text inside msg
    ready = next(r for r in relay_lines if r.get("event") == "connector.ready")
    assert ready["msg"] == "connector.ready"
    assert ready["tunnel"] == "demo"
    assert ready["connector"] == "conn-1"
    assert not [r for r in relay_lines + connector_lines if "=" in r["msg"]]
    # hypercorn's own lines (the connector's ops endpoint runs it) are JSON lines of ours
    assert any(r["logger"] == "hypercorn.error" for r in connector_lines)
    # SIGTERM: both connections log their end, then `stopped` with the reason, last
    ended = [r for r in connector_lines if r["msg"] == "connection ended"]
    assert len(ended) == 2, connector_text[-3000:]
    assert connector_lines[-1]["reason"] == "SIGTERM: drained"
    assert relay_lines[-1]["reason"] == "SIGTERM: drained"
    closed = [r for r in relay_lines if r.get("event") == "connector.closed"]
    assert [r["connector"] for r in closed] == ["conn-1", "conn-1"], closed
    # never a token or a parameter value, at debug either
    for secret in (token, token.split(".")[2], SECRET_PARAM):
        assert secret not in relay_text
        assert secret not in connector_text


async def test_a_refused_dial_logs_connection_refused(tmp_path: Path) -> None:
    async with open_stack(tmp_path, relay=False) as stack, trio.open_nursery() as nursery:
        relay_key = generate_key_files(tmp_path / "relay-keys", "relay")
        config = write_stack_config(
            stack,
            relay_urls=[f"ws://127.0.0.1:{closed_port()}"],
            relay_public_keys=[relay_key.public_key],
        )
        with trio.fail_after(60):
            process, err = await nursery.start(_hold, ["connector", "run", "--config", str(config)])
            (line,) = (await err.wait_for(lambda line: "cannot reach relay" in line))[:1]
            lines = await stop(process, err)
    (record,) = records([line])
    assert record["level"] == "warning"
    assert record["msg"].endswith(": Connection refused"), record
    assert "OSError" not in "\n".join(err.lines)
    assert lines[-1]["reason"] == "SIGTERM: drained"


async def test_a_failed_tls_handshake_logs_its_reason(tmp_path: Path) -> None:
    """wss:// to the relay's plain-HTTP port: the TLS reason, and the connector keeps trying."""
    async with open_stack(tmp_path) as stack, trio.open_nursery() as nursery:
        assert stack.relay is not None
        plain = stack.relay.ws_url.replace("ws://", "wss://")
        config = write_stack_config(stack, "wss", relay_urls=[plain])
        with trio.fail_after(60):
            process, err = await nursery.start(_hold, ["connector", "run", "--config", str(config)])
            await err.wait_for(lambda line: f"TLS with {plain} failed" in line, count=2)
            lines = await stop(process, err)
    failed = [r for r in lines if r["msg"].startswith(f"TLS with {plain} failed: ")]
    assert failed[0]["msg"].endswith(": WRONG_VERSION_NUMBER"), failed[0]


async def test_tdslite_and_dev_idp_log_json_and_a_stopped_line(
    tmp_path: Path, tds_users_file: Path
) -> None:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            tds, tds_err = await nursery.start(
                _hold,
                ["tdslite", "serve", "--port", "0", "--db", ":memory:",
                 "--users", str(tds_users_file)],
            )  # fmt: skip
            idp, idp_err = await nursery.start(
                _hold, ["dev-idp", "serve", "--port", "0", "--key-dir", str(tmp_path / "idp")]
            )
            assert (await first_line(tds)).startswith("tdslite listening on ")
            assert (await first_line(idp)).startswith("dev IdP issuer: http://127.0.0.1:")
            await idp_err.wait_for(event("devidp.listening"))
            tds_lines = await stop(tds, tds_err)
            idp_lines = await stop(idp, idp_err)
    assert tds_lines[-1]["logger"] == "tdslite"
    assert tds_lines[-1]["reason"] == "SIGTERM"
    assert idp_lines[-1]["reason"] == "SIGTERM"
    assert any(r["logger"] == "hypercorn.error" for r in idp_lines)


async def test_a_terminal_gets_text_lines(tmp_path: Path, tds_users_file: Path) -> None:
    """stderr on a pty: text, not JSON; --log-format json still gives JSON there."""
    outputs = {}
    for name, extra in (("auto", []), ("json", ["--log-format", "json"])):
        controller, terminal = pty.openpty()
        process = await trio.lowlevel.open_process(
            [*EDGETDS, "tdslite", "serve", "--port", "0", "--db", ":memory:",
             "--users", str(tds_users_file), *extra],
            stdout=subprocess.PIPE,
            stderr=terminal,
        )  # fmt: skip
        os.close(terminal)
        text = b""
        with trio.fail_after(30):
            await first_line(process)
            process.send_signal(signal.SIGTERM)
            async with trio.lowlevel.FdStream(controller) as stream:
                while True:
                    try:
                        chunk = await stream.receive_some()
                    except trio.BrokenResourceError:  # EIO: the terminal's last holder exited
                        break
                    if not chunk:
                        break
                    text += chunk
            assert await process.wait() == 0
        outputs[name] = text.decode().strip().splitlines()
    auto, forced = outputs["auto"], outputs["json"]
    assert " info    tdslite: stopped reason=SIGTERM" in auto[-1], auto
    assert not auto[-1].startswith("{")
    assert json.loads(forced[-1])["event"] == "stopped", forced


# -- in-process: the per-query lines, the formatters, the summary ------------------------------


async def test_per_query_lines_are_debug_at_the_relay_and_the_connector(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with open_stack(tmp_path) as stack:
        with trio.fail_after(60):
            async with open_connector(load_config(stack.config_path)) as connector:
                await connector.wait_ready()
                status, _ = await post_query(stack, sql="SELECT 1 AS n")
    assert status == 200
    per_query = [r for r in caplog.records if record_fields(r).get("event") == "query"]
    assert sorted(r.name for r in per_query) == ["edgetds.connector.query", "edgetds.relay"]
    assert {r.levelno for r in per_query} == {logging.DEBUG}  # not there at info


# -- the formatters and the summary -------------------------------------------------------------


def _record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("edgetds.test", logging.INFO, __file__, 1, msg, None, None)


def test_json_and_text_lines_carry_fields_as_members_and_quote_hostile_values() -> None:
    record = _record("connector.ready")
    record.fields = {"event": "connector.ready", "peer": 'x" forged=1\nline', "n": 2}
    line = JsonFormatter().format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["event"] == doc["msg"] == "connector.ready"
    assert doc["peer"] == 'x" forged=1\nline'
    assert doc["n"] == 2
    text = TextFormatter().format(record)
    assert "\n" not in text
    assert text.endswith('connector.ready peer="x\\" forged=1?line" n=2')


async def test_the_summary_is_logged_per_interval_and_not_when_idle(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edgetds.test")
    summary = QuerySummary(logging.getLogger("edgetds.test"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(summary.run, 60)
        for ms in range(1, 101):
            summary.record(float(ms), error="query.timeout" if ms > 98 else None)
        await trio.sleep(61)  # virtual time: the first interval ends
        await trio.sleep(120)  # two idle intervals: nothing logged
        nursery.cancel_scope.cancel()
    lines = [r for r in caplog.records if r.getMessage() == "queries.summary"]
    assert len(lines) == 1
    fields = lines[0].fields  # type: ignore[attr-defined]
    assert fields["queries"] == 100
    assert fields["errors"] == 2
    assert fields["errors_by_code"] == {"query.timeout": 2}
    assert (fields["p50_ms"], fields["p99_ms"]) == (50.0, 99.0)
