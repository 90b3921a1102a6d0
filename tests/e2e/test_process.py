"""The connector as a real process (`edgetds connector run --config ...`): a 200,000-row result
streamed with its memory bounded (peak RSS measured from /proc), and SIGTERM draining: an
in-flight query finishes, new ones are not taken, the process exits 0; a second signal exits at
once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio

from tests.support.e2e_stack import Base
from tests.support.waiting import eventually

ROWS = 200_000
PAD = "x" * 200
BIG = (
    "SELECT a.n + 10 * b.n + 100 * c.n + 1000 * e.n + 10000 * f.n + 100000 * t.n AS i, "
    f"N'{PAD}' AS pad FROM d a, d b, d c, d e, d f, two t"
)


def _proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@asynccontextmanager
async def connector_process(base: Base, **options: object) -> AsyncIterator[trio.Process]:
    path = base.write_config(**options)
    log = (base.workdir / "connector.log").open("wb")
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "edgetds", "connector", "run", "--config", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()
        log.close()


async def _connections(base: Base, http: httpx.AsyncClient, token: str) -> int:
    url = f"{base.relay.http_url}/v1/tunnels/demo/status"
    resp = await http.get(url, headers={"Authorization": f"Bearer {token}"})
    return int(resp.json().get("connections", 0))


async def _wait_connected(base: Base, http: httpx.AsyncClient, token: str, n: int) -> None:
    async def connected() -> bool:
        return await _connections(base, http, token) >= n

    await eventually(connected)


async def test_200k_row_stream_keeps_connector_memory_bounded(base: Base) -> None:
    token = base.idp.mint(sub="alice", groups=["analysts"])
    url = f"{base.relay.http_url}/v1/tunnels/demo/query"
    headers = {"Authorization": f"Bearer {token}"}
    async with connector_process(base) as proc, httpx.AsyncClient(timeout=120) as http:
        with trio.fail_after(60):
            await _wait_connected(base, http, token, 2)
            warm = await http.post(
                url, json={"sql": "SELECT n FROM d", "params": {}}, headers=headers
            )
            assert warm.status_code == 200
        baseline_peak = _proc_kib(proc.pid, "VmHWM")
        rows = 0
        body_bytes = 0
        tail = b""
        paused_rss = 0
        with trio.fail_after(240):
            async with http.stream(
                "POST", url, json={"sql": BIG, "params": {}, "timeout_ms": 200_000}, headers=headers
            ) as resp:
                assert resp.status_code == 200
                async for chunk in resp.aiter_raw():
                    body_bytes += len(chunk)
                    rows += chunk.count(b"\n")
                    tail = (tail + chunk)[-400:]
                    if paused_rss == 0 and body_bytes > 4 * 1024 * 1024:
                        # a slow client: stop reading; the connector must stall, not buffer
                        await trio.sleep(3)
                        paused_rss = _proc_kib(proc.pid, "VmRSS")
        peak = _proc_kib(proc.pid, "VmHWM")
    terminal = json.loads(tail.decode().rstrip("\n").rsplit("\n", 1)[-1])
    assert "done" in terminal, terminal
    assert terminal["done"]["rows"] == ROWS
    assert rows == ROWS + 2  # columns line + rows + done line
    growth_mib = (peak - baseline_peak) / 1024
    body_mib = body_bytes / (1024 * 1024)
    print(
        f"\n200k-row stream: body {body_mib:.1f} MiB; connector peak RSS {peak / 1024:.1f} MiB "
        f"(baseline peak {baseline_peak / 1024:.1f} MiB, growth {growth_mib:.1f} MiB, "
        f"RSS while the client paused {paused_rss / 1024:.1f} MiB)"
    )
    assert body_mib > 40
    assert growth_mib < 16, "connector memory grew with the result size"


async def test_sigterm_drains_in_flight_then_exits(base: Base) -> None:
    token = base.idp.mint(sub="alice", groups=["analysts"])
    url = f"{base.relay.http_url}/v1/tunnels/demo/query"
    headers = {"Authorization": f"Bearer {token}"}
    medium = "SELECT COUNT(*) AS c FROM d a, d b, d c, d e, d f, d g, d h"  # ~1 s in tdslite
    async with (
        connector_process(base, drain_grace_s=20) as proc,
        httpx.AsyncClient(timeout=60) as http,
    ):
        with trio.fail_after(90):
            await _wait_connected(base, http, token, 2)
            result: dict[str, httpx.Response] = {}

            async def in_flight() -> None:
                result["r"] = await http.post(
                    url, json={"sql": medium, "params": {}}, headers=headers
                )

            secret = "SECRET-PARAM-VALUE-7431"
            with_param = await http.post(
                url,
                json={"sql": "SELECT @p AS p", "params": {"p": secret}},
                headers=headers,
            )
            assert secret in with_param.text  # it reached the database as data...
            async with trio.open_nursery() as nursery:
                nursery.start_soon(in_flight)
                await eventually(lambda: base.db.statement_log.is_running(medium))
                proc.send_signal(signal.SIGTERM)
            assert result["r"].status_code == 200, result["r"].text
            assert json.loads(result["r"].text.splitlines()[-1])["done"]["rows"] == 1
            assert await proc.wait() == 0
            # gone from the relay: new queries get 503 no connector
            late = await http.post(
                url, json={"sql": "SELECT 1 AS x", "params": {}}, headers=headers
            )
            assert late.status_code == 503
    log = (base.workdir / "connector.log").read_text()
    assert "draining" in log
    assert token not in log  # tokens never reach the log
    assert "SECRET-PARAM-VALUE-7431" not in log  # ...but never reached the log
    audit = (base.workdir / "connector" / "audit.jsonl").read_text()
    assert "SECRET-PARAM-VALUE-7431" not in audit  # analysts' values are redacted
    assert '"name":"p"' in audit


async def test_second_signal_exits_at_once(base: Base) -> None:
    token = base.idp.mint(sub="alice", groups=["analysts"])
    async with (
        connector_process(base, drain_grace_s=60) as proc,
        httpx.AsyncClient(timeout=60) as http,
    ):
        with trio.fail_after(60):
            await _wait_connected(base, http, token, 2)
            slow = "SELECT COUNT(*) AS c FROM d a, d b, d c, d e, d f, d g, d h, d i, d j"

            async def in_flight() -> None:
                await http.post(
                    f"{base.relay.http_url}/v1/tunnels/demo/query",
                    json={"sql": slow, "params": {}},
                    headers={"Authorization": f"Bearer {token}"},
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(in_flight)
                await eventually(lambda: base.db.statement_log.is_running(slow))
                proc.send_signal(signal.SIGTERM)
                await trio.sleep(0.5)
                assert proc.returncode is None  # draining: waits for the slow query
                started = trio.current_time()
                proc.send_signal(signal.SIGTERM)
                code = await proc.wait()
                took = trio.current_time() - started
                nursery.cancel_scope.cancel()
    assert code == 0
    assert took < 10
