"""The single binary (dist/edgetds, `make binary`): --version, connector check and diag, and a
real query through the BINARY connector (a subprocess) against the Python relay, tdslite and the
dev IdP, and one whose read-only check runs in a worker process of the binary.

The binary is built once for the whole session (tests/binary/conftest.py). A binary that starts
but misses a module loaded by name (sqlglot dialects, websockets' lazy imports, ...) fails the
end-to-end query, not --version.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
import trio

from tests.support.binary import BUILD_TIMEOUT_S
from tests.support.ops_stack import open_stack, post_query
from tests.support.ports import reserved_port
from tests.support.processes import alive
from tests.support.waiting import eventually


def _env(tmp: Path) -> dict[str, str]:
    """The binary's environment: no venv (no PYTHONPATH, no VIRTUAL_ENV), and ``tmp/tmp`` as
    its TMPDIR, where the onefile launcher unpacks itself (``_MEI*``; as systemd's PrivateTmp)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/bin:/bin"
    (tmp / "tmp").mkdir(exist_ok=True)
    env["TMPDIR"] = str(tmp / "tmp")
    return env


@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
def test_version(binary: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=60, env=_env(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "edgetds 0.1.0"


@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
async def test_check_and_a_real_query_through_the_binary_connector(
    binary: Path, tmp_path: Path
) -> None:
    async with open_stack(tmp_path) as stack:
        with trio.fail_after(60):
            check = await trio.run_process(
                [str(binary), "connector", "check", "--config", str(stack.config_path)],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=_env(tmp_path),
            )
        assert check.returncode == 0, check.stderr.decode()
        assert "ok: connector 'conn-1' for tunnel 'demo'" in check.stdout.decode()
        with trio.fail_after(60):
            diag = await trio.run_process(
                [str(binary), "connector", "diag", "--config", str(stack.config_path), "--json"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=_env(tmp_path),
            )
        assert diag.returncode == 0, diag.stdout.decode() + diag.stderr.decode()
        assert json.loads(diag.stdout)["ok"] is True

        # run it as systemd would: Type=notify ($NOTIFY_SOCKET) and [ops] listen for /ready
        ops_port = reserved_port()
        config = stack.config_path
        config.write_text(config.read_text() + f'\n[ops]\nlisten = "127.0.0.1:{ops_port}"\n')
        notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        await notify.bind(str(tmp_path / "notify"))
        env = {**_env(tmp_path), "NOTIFY_SOCKET": str(tmp_path / "notify")}
        stderr = tmp_path / "connector.log"
        async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=5) as client:
            with stderr.open("wb") as log, notify:
                run = [str(binary), "connector", "run", "--config", str(config)]
                process = await nursery.start(
                    functools.partial(trio.run_process, run, stderr=log, check=False, env=env)
                )
                try:
                    with trio.fail_after(60):
                        # READY=1 comes from the launcher's child: NotifyAccess=all in the unit
                        ready_message = (await notify.recv(4096)).decode()
                        ready = await client.get(f"http://127.0.0.1:{ops_port}/ready")
                        await _wait_for_connector(client, stack.relay.http_url, stack.token())
                        # a real ad-hoc query: sqlglot's read-only check runs in the binary
                        token = stack.token()
                        status, lines = await post_query(
                            stack, sql="SELECT 41 + 1 AS answer", token=token
                        )
                        # over 1 KiB: the check runs in a worker process (this same binary,
                        # started by multiprocessing through freeze_support)
                        big_sql = (
                            f"SELECT 600 AS n WHERE 1 IN ({', '.join(map(str, range(1, 300)))})"
                        )
                        big_status, big_lines = await post_query(stack, sql=big_sql, token=token)
                        metrics = await client.get(f"http://127.0.0.1:{ops_port}/metrics")
                    process.send_signal(signal.SIGTERM)  # drain, then exit 0
                    with trio.fail_after(30):
                        stopping_message = (await notify.recv(4096)).decode()
                        code = await process.wait()
                finally:
                    if process.returncode is None:
                        process.kill()
        logs = stderr.read_text()
    assert ready_message.startswith("READY=1"), ready_message
    assert stopping_message.startswith("STOPPING=1"), stopping_message
    assert ready.status_code == 200, ready.text
    assert 'edgetds_connector_queries_total{outcome="ok",role="analyst"} 2.0' in metrics.text
    assert status == 200, (lines, logs[-3000:])
    assert lines[1] == [42], lines
    assert lines[-1]["done"]["rows"] == 1
    assert code == 0, logs[-3000:]
    assert "tunnel ready" in logs
    # a clean stop removes what the launcher unpacked (a SIGKILL would leave ~90 MB behind)
    assert list((tmp_path / "tmp").iterdir()) == []
    assert big_status == 200, (big_lines, logs[-3000:])
    assert big_lines[1] == [600], big_lines
    worker = re.search(r"read-only check: parse worker process (\d+) started", logs)
    assert worker is not None, logs[-3000:]
    worker_pid = int(worker.group(1))
    assert worker_pid != process.pid
    assert not alive(worker_pid)  # stopped with the connector: no orphan
    assert token not in logs  # never a token in the logs


async def _wait_for_connector(client: httpx.AsyncClient, http_url: str, token: str) -> None:
    """Until the relay itself lists the connection (READY=1 is sent as READY leaves)."""

    async def listed() -> bool:
        response = await client.get(
            f"{http_url}/v1/tunnels/demo/status", headers={"Authorization": f"Bearer {token}"}
        )
        return response.status_code == 200 and bool(response.json().get("connections"))

    await eventually(listed, interval=0.1)
