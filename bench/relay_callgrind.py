"""How many instructions does the Python relay spend per query? (callgrind, deterministic)

The relay alone under ``valgrind --tool=callgrind`` (``edgetds relay serve`` from ``--server-dir``,
its own process, instrumentation switched on only around the measured queries with
``callgrind_control -i on|off``); in this process a dev IdP, a minimal connector peer speaking
protocol/ over websockets.trio (one COLUMNS, one ROWS and a DONE per QUERY, each QUERY answered
as it comes, so several streams are in flight at once) and ``--concurrency`` client slots, each a
keep-alive HTTP/1.1 connection sending ``SELECT @n AS n`` with a parameter, one query at a time
(default 1 slot: one query at a time in all). Prints the instructions per query: the
instructions of the measured window over its ``--count`` queries (and the relay's
Trio-independent totals are the same each run: ``PYTHONHASHSEED=0``).

``--syscalls``: the relay runs without valgrind and ``strace -c -f`` attached to its threads
for the measured window counts its system calls instead; prints them per query and the five
most frequent. Timing-dependent (how many requests a run-loop round finds ready), unlike the
instruction count.

Run: ``.venv/bin/python -m bench.relay_callgrind [--count 300] [--concurrency 16]
[--syscalls] [--keep FILE] [--server-dir TREE]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.trio.client import connect

from bench.relay_latency import _serve_queries
from bench.stack import (
    NO_RATE_LIMITS,
    TUNNEL,
    _write_relay_config,
    listening_address,
    relay_handle,
    strace_counts,
    wait_connected,
)
from bench.tdslite_replay import _callgrind, _instructions
from edgetds.devidp import open_dev_idp
from protocol import SUBPROTOCOL, Connection, Role, events, make_connector_token
from tests.support.relays import RelayHandle


@dataclass(frozen=True)
class Window:
    """How the measured window is counted: callgrind's instructions (default) or ``strace -c``."""

    count: int
    warmup: int
    concurrency: int = 1
    syscalls: bool = False


async def measure(server_dir: Path, workdir: Path, window: Window) -> float:
    """Instructions (or, with ``window.syscalls``, system calls) per query of the relay run from
    ``server_dir``."""
    async with open_dev_idp() as idp:
        relay_key, conn_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        config = _write_relay_config(workdir, idp.issuer, NO_RATE_LIMITS, relay_key, conn_key)
        out = workdir / ("strace.out" if window.syscalls else "callgrind.out")
        relay = [
            str(server_dir / ".venv" / "bin" / "python"), "-m", "edgetds", "relay", "serve",
            "--config", str(config), "--log-level", "warning",
        ]  # fmt: skip
        valgrind = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
        ]
        cmd = relay if window.syscalls else valgrind + relay
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        async with trio.open_nursery() as nursery:
            proc: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    cmd,
                    cwd=server_dir,
                    env=env,
                    check=False,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
            )
            try:
                url = await listening_address(proc, "the relay", timeout_s=300)
                handle = relay_handle(url, relay_key, conn_key)
                counter = _Strace(proc.pid, out) if window.syscalls else _Callgrind(proc.pid, out)
                return await _queries(handle, idp, conn_key, counter, window)
            finally:
                proc.terminate()
                nursery.cancel_scope.cancel()
    raise AssertionError("unreachable")


class _Callgrind:
    """Instructions of the window: callgrind's instrumentation on, then off and dumped."""

    def __init__(self, pid: int, out: Path) -> None:
        self.pid, self.out = pid, out

    async def start(self) -> None:
        await trio.to_thread.run_sync(_callgrind, self.pid, "-z")
        await trio.to_thread.run_sync(_callgrind, self.pid, "-i", "on")

    async def stop(self) -> float:
        await trio.to_thread.run_sync(_callgrind, self.pid, "-i", "off")
        await trio.to_thread.run_sync(_callgrind, self.pid, "-d")
        return _instructions(self.out)


class _Strace:
    """System calls of the window: ``strace -c -f`` attached to every thread, then detached."""

    def __init__(self, pid: int, out: Path) -> None:
        self.pid, self.out = pid, out
        self.proc: subprocess.Popen[bytes] | None = None
        self.counts: dict[str, int] = {}

    async def start(self) -> None:
        threads = [f"-p{tid}" for tid in os.listdir(f"/proc/{self.pid}/task")]
        cmd = ["strace", "-c", "-f", "-o", str(self.out), *threads]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)  # noqa: ASYNC220
        assert self.proc.stderr is not None
        for _ in threads:  # "strace: Process N attached" once per thread: counting has begun
            await trio.to_thread.run_sync(self.proc.stderr.readline)

    async def stop(self) -> float:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        await trio.to_thread.run_sync(self.proc.communicate)  # its exit, and the pipe closed
        self.counts = strace_counts(self.out.read_text())
        return self.counts["total"]

    def top(self, count: int, queries: int) -> str:
        """The ``count`` most frequent system calls, per query."""
        rows = sorted(
            ((n, name) for name, n in self.counts.items() if name != "total"), reverse=True
        )
        return ", ".join(f"{name} {calls / queries:.1f}" for calls, name in rows[:count])


async def _queries(
    relay: RelayHandle,
    idp: object,
    conn_key: Ed25519PrivateKey,
    counter: _Callgrind | _Strace,
    window: Window,
) -> float:
    token = make_connector_token(
        conn_key, connector_id="conn-1", tunnel=TUNNEL, now=int(time.time())
    )
    async with (
        trio.open_nursery() as nursery,
        connect(
            f"{relay.ws_url}/v1/tunnels/{TUNNEL}/connect",
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {token}"},
            compression=None,
            max_size=None,
            open_timeout=120,
        ) as ws,
    ):
        conn = Connection(Role.CONNECTOR)
        hello = await ws.recv()
        assert isinstance(hello, bytes)
        conn.receive_data(hello)
        conn.events()
        conn.send(events.Ready("conn-1", 128))
        await ws.send(conn.data_to_send())
        nursery.start_soon(_serve_queries, ws, conn, 1)
        await wait_connected(relay, idp, timeout_s=120)  # type: ignore[arg-type]
        headers = {"Authorization": f"Bearer {idp.mint(sub='bench')}"}  # type: ignore[attr-defined]
        url = f"{relay.http_url}/v1/tunnels/{TUNNEL}/query"
        slots = window.concurrency
        async with AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(httpx.AsyncClient(timeout=120, trust_env=False))
                for _ in range(slots)
            ]

            async def query(client: httpx.AsyncClient, n: int) -> None:
                body = {"sql": "SELECT @n AS n", "params": {"n": n}}
                response = await client.post(url, json=body, headers=headers)
                assert response.status_code == 200, response.text
                assert response.content.endswith(b"\n")

            async def run(first: int, count: int) -> None:
                """`count` queries from the slots at once: slot i sends i, i + slots, ..."""
                if slots == 1:
                    for i in range(count):
                        await query(clients[0], first + i)
                    return

                async def slot(index: int) -> None:
                    for i in range(index, count, slots):
                        await query(clients[index], first + i)

                async with trio.open_nursery() as queries:
                    for index in range(slots):
                        queries.start_soon(slot, index)

            await run(1000, window.warmup)
            await counter.start()
            await run(100000, window.count)
            total = await counter.stop()
        nursery.cancel_scope.cancel()
    if isinstance(counter, _Strace):
        print(f"  most frequent: {counter.top(5, window.count)}", flush=True)
    return total / window.count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=300, help="measured queries")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--concurrency", type=int, default=1, help="client slots sending queries at once"
    )
    parser.add_argument(
        "--syscalls", action="store_true", help="count system calls (strace) instead"
    )
    parser.add_argument(
        "--keep", type=Path, help="copy callgrind's dump (strace's table) of the last round here"
    )
    parser.add_argument(
        "--server-dir", type=Path, default=Path.cwd(), help="the tree whose relay runs"
    )
    args = parser.parse_args(argv)
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            window = Window(args.count, args.warmup, args.concurrency, args.syscalls)
            value = trio.run(measure, args.server_dir.resolve(), Path(tmp), window)
            if args.keep is not None:
                name = "strace.out" if args.syscalls else "callgrind.out.1"
                shutil.copyfile(Path(tmp) / name, args.keep)
        what = "system calls" if args.syscalls else "instructions"
        at = f", concurrency {args.concurrency}" if args.concurrency != 1 else ""
        if args.syscalls:
            print(f"relay {what} per query {value:6.1f}  ({args.count} queries{at})", flush=True)
        else:
            print(f"relay {what} per query {value:14,.0f}  ({args.count} queries{at})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
