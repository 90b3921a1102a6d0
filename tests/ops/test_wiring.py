"""The connector runtime feeds connector/ops.py: with ``[ops] listen`` a real connector serves
/ready and /metrics that follow its real connections, queries and drain, and `edgetds connector
run` speaks systemd's notify protocol (READY=1 after the first registered connection,
STOPPING=1 on SIGTERM), as examples/systemd/edgetds-connector.service expects.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from connector.config import ConfigError, load_config, parse_config
from connector.runtime import open_connector
from identity.keys import generate_key_files
from tests.support.ops_stack import open_stack, post_query, write_stack_config
from tests.support.ports import reserved_port
from tests.support.waiting import eventually


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def _with_ops(path: Path, listen: str) -> Path:
    path.write_text(path.read_text() + f'\n[ops]\nlisten = "{listen}"\n')
    return path


async def test_ready_and_metrics_follow_the_real_connector(tmp_path: Path) -> None:
    async with open_stack(tmp_path) as stack:
        config = load_config(_with_ops(stack.config_path, "127.0.0.1:0"))
        assert config.ops_listen == "127.0.0.1:0"
        with trio.fail_after(30):
            async with (
                open_connector(config) as connector,
                httpx.AsyncClient(timeout=5) as client,
            ):
                base = connector.ops_server.url
                await connector.wait_ready()
                ready = await client.get(base + "/ready")
                ok, _ = await post_query(stack, sql="SELECT 1 AS n")
                refused, _ = await post_query(
                    stack, sql="SELECT 1 AS n", token=stack.token(groups=["contractors"])
                )
                metrics = (await client.get(base + "/metrics")).text
                connector.start_shutdown()
                while not connector.draining:
                    await connector.wait_changed()
                draining = await client.get(base + "/ready")
    relay = stack.relay.ws_url
    assert ready.status_code == 200, ready.text
    assert ready.json()["connections"] == 1
    assert ready.json()["relays"] == {relay: 1}
    assert ok == 200
    assert refused == 403
    assert _metric(metrics, f'edgetds_connector_relay_connections{{relay="{relay}"}}') == 1
    assert _metric(metrics, 'edgetds_connector_queries_total{outcome="ok",role="analyst"}') == 1
    assert _metric(metrics, 'edgetds_connector_refusals_total{reason="policy.denied"}') == 1
    assert _metric(metrics, 'edgetds_connector_result_rows_total{role="analyst"}') == 1
    assert _metric(metrics, 'edgetds_connector_frames_total{direction="in"}') >= 3  # HELLO, 2 QUERY
    assert _metric(metrics, 'edgetds_connector_frame_bytes_total{direction="out"}') > 0
    assert _metric(metrics, 'edgetds_connector_pool_size{login="reader"}') == 16
    assert "edgetds_connector_relay_rtt_seconds" in metrics
    assert draining.status_code == 503
    assert draining.json()["reason"] == "draining"


async def _datagram(sock: trio.socket.SocketType) -> str:
    return (await sock.recv(4096)).decode()


@asynccontextmanager
async def _run_under_systemd(
    tmp_path: Path, config: Path
) -> AsyncIterator[tuple[trio.Process, trio.socket.SocketType]]:
    """`edgetds connector run` with $NOTIFY_SOCKET bound here; its output in connector.log."""
    notify_path = str(tmp_path / "notify")
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await sock.bind(notify_path)
    env = {**os.environ, "NOTIFY_SOCKET": notify_path, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "edgetds", "connector", "run", "--config", str(config)]
    log = (tmp_path / "connector.log").open("wb")
    process = await trio.lowlevel.open_process(command, stdout=log, stderr=log, env=env)
    try:
        yield process, sock
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()
        sock.close()


async def test_connector_run_notifies_systemd_and_serves_ready(tmp_path: Path) -> None:
    port = reserved_port()
    async with open_stack(tmp_path / "stack") as stack:
        path = _with_ops(stack.config_path, f"127.0.0.1:{port}")
        async with _run_under_systemd(tmp_path, path) as (process, sock):
            with trio.fail_after(60):
                ready_message = await _datagram(sock)
                async with httpx.AsyncClient(timeout=5) as client:
                    ready = await client.get(f"http://127.0.0.1:{port}/ready")
                process.send_signal(signal.SIGTERM)
                stopping_message = await _datagram(sock)
                code = await process.wait()
    output = (tmp_path / "connector.log").read_text()
    assert ready_message.startswith("READY=1\n"), ready_message
    assert ready.status_code == 200, (ready.text, output[-2000:])
    assert stopping_message.startswith("STOPPING=1"), stopping_message
    assert code == 0, output[-2000:]


def test_ops_listen_mistakes_are_located(tmp_path: Path) -> None:
    key = generate_key_files(tmp_path, "k").private_path
    doc = {
        "connector": {
            "id": "c",
            "tunnel": "t",
            "relay_urls": ["wss://relay.example.com"],
            "private_key_file": str(key),
            "relay_public_keys": ["ed25519:ai-UyC5sVJnYzUXJ6M11gADPLuDl2SQObR9uxj2tPkQ"],
        },
        "database": {"host": "db", "database": "d"},
        "logins": {"r": {"user": "u", "password_env": "PW"}},
        "issuers": [{"issuer": "https://id.example.com", "audience": "a"}],
        "policy": {"roles": {}},
    }
    for bad in ({"listen": "9464"}, {"listen": "127.0.0.1:http"}, {"port": 9464}):
        with pytest.raises(ConfigError) as caught:
            parse_config({**doc, "ops": bad}, file=tmp_path / "c.toml", env={"PW": "x"})
        assert [p.location.split(".")[0] for p in caught.value.problems] == ["ops"], bad
    good = parse_config(
        {**doc, "ops": {"listen": "[::1]:9464"}}, file=tmp_path / "c.toml", env={"PW": "x"}
    )
    assert good.ops_listen == "[::1]:9464"


async def test_a_wrong_database_password_is_reported_at_start_up(tmp_path: Path) -> None:
    """Before any query: logged at once, in systemd's STATUS and in /ready (503)."""
    port = reserved_port()
    async with open_stack(tmp_path / "stack") as stack:
        bad = {"reader": ("reader", "not-the-password"), "writer": ("writer", "writer-pw")}
        path = _with_ops(write_stack_config(stack, "badpw", logins=bad), f"127.0.0.1:{port}")
        messages: list[str] = []
        async with _run_under_systemd(tmp_path, path) as (process, sock):
            with trio.fail_after(60):
                while not any(m.startswith("READY=1") for m in messages):
                    messages.append(await _datagram(sock))
                async with httpx.AsyncClient(timeout=5) as client:
                    ready = await client.get(f"http://127.0.0.1:{port}/ready")
                process.send_signal(signal.SIGTERM)
                code = await process.wait()
        queries = [e for e in stack.tds.statement_log.entries if "edgetds" in str(e)]
    output = (tmp_path / "connector.log").read_text()
    # the logins are checked before the relay is dialled: the first status already says so,
    # and READY (the relay side works) keeps saying it
    assert messages[0] == "STATUS=starting; database login failing: reader", messages
    ready_message = next(m for m in messages if m.startswith("READY=1"))
    assert "\nSTATUS=started, connected to ws://127.0.0.1:" in ready_message
    assert ready_message.endswith("; database login failing: reader"), ready_message
    failing = [json.loads(line) for line in output.splitlines() if "login 'reader' failing" in line]
    assert failing, output[-2000:]
    assert failing[0]["level"] == "error"
    assert "18456" in failing[0]["msg"]
    assert "not-the-password" not in output
    assert ready.status_code == 503
    assert ready.json()["reason"] == "database login failing"
    assert ready.json()["database"].startswith("reader: ")
    assert queries == []  # nobody sent a query
    assert code == 0, output[-2000:]


async def test_a_login_that_starts_working_is_noticed(tmp_path: Path) -> None:
    async with open_stack(tmp_path) as stack:
        bad = {"reader": ("reader", "new-password"), "writer": ("writer", "writer-pw")}
        path = write_stack_config(stack, "changed", logins=bad, login_check_interval_s=0.05)
        with trio.fail_after(30):
            async with open_connector(load_config(path)) as connector:
                await eventually(lambda: "reader" in connector.ops.logins_failing)
                assert "database login failing: reader" in connector.ops.status_line()
                # the DBA sets the password the connector has
                users = stack.tds.engine.users
                users["reader"] = dataclasses.replace(users["reader"], password="new-password")
                await eventually(lambda: not connector.ops.logins_failing)
                assert "database login failing" not in connector.ops.status_line()
