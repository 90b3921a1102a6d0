"""The workerd floor under the Worker relay's CPU per query: a Worker that does nothing but what
any Worker answering a POST through a Durable Object must do.

bench/worker_floor/worker.js runs under the same workerd binary (node_modules) and compatibility
date as the relay Worker, with two routes: ``/plain`` reads the body and answers one fixed NDJSON
line (HTTP in and out); ``/rpc`` also parses the body as JSON and makes one Durable Object RPC call
with a string (fetch + DO RPC). The same keep-alive HTTP/1.1 client as the load generator
(edgetds.loadtest) sends the same ``SELECT @n`` body ``count`` times, one after the other, and
workerd's CPU time per request comes from its CPU-time clock (bench/cputime.py), as bench/tunnel.py
measures the relay's. The relay's CPU per query over the ``/rpc`` floor is the relay's own work
(auth, limits, attestation, the WebSocket to the connector, the protocol model).

``--gap-ms G`` waits G ms after each answer (the recorded requests only): the floor at a
tunnel's pace rather than closed loop (the Worker tunnel of ``bench.tunnel`` answers a query
about every 4-6 ms at concurrency 1 here).

Run: ``.venv/bin/python -m bench.worker_floor [--count 2000] [--gap-ms 5.5]``.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import trio

from bench.stack import process_cpu_seconds
from edgetds.loadtest import HttpConnection

ROOT = Path(__file__).resolve().parent.parent
WORKERD = ROOT / "node_modules" / ".bin" / "workerd"
WORKER_JS = Path(__file__).resolve().parent / "worker_floor" / "worker.js"
#: the relay Worker's compatibility date (pinned with workerd in relay/worker/scripts/workerd.mjs)
COMPAT = re.search(
    r'COMPATIBILITY_DATE = "([0-9-]+)"',
    (ROOT / "relay" / "worker" / "scripts" / "workerd.mjs").read_text(),
)
BODY = b'{"sql":"SELECT @n AS n","params":{"n":1}}'

CONFIG = """using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "main", worker = .w) ],
  sockets = [ (name = "http", http = (), service = "main") ],
);
const w :Workerd.Worker = (
  modules = [ (name = "worker.js", esModule = embed "worker.js") ],
  compatibilityDate = "%s",
  durableObjectNamespaces = [ (className = "Floor", uniqueKey = "edgetds-bench-floor") ],
  durableObjectStorage = (inMemory = void),
  bindings = [ (name = "FLOOR", durableObjectNamespace = "Floor") ],
);
"""


async def _send(client: HttpConnection, path: str, n: int, gap_s: float = 0.0) -> None:
    headers = [(b"content-type", b"application/json")]
    for _ in range(n):
        status, _body = await client.post(path, headers, BODY, lambda _chunk: None)
        if status != 200:
            raise RuntimeError(f"the floor Worker answered {status} on {path}")
        if gap_s:
            await trio.sleep(gap_s)  # idle time before the next request: the pace under study


async def measure_floor(count: int, warmup: int = 200, gap_s: float = 0.0) -> dict[str, float]:
    """workerd CPU ms per request of the floor Worker: ``plain`` (fetch) and ``rpc`` (fetch +
    JSON.parse + one DO RPC call), each after ``warmup`` unrecorded requests; ``gap_s`` of idle
    time after each answer (0: closed loop)."""
    if COMPAT is None:
        raise RuntimeError("no COMPATIBILITY_DATE in relay/worker/scripts/workerd.mjs")
    with tempfile.TemporaryDirectory(prefix="edgetds-floor-") as tmp:
        out = Path(tmp)
        (out / "worker.js").write_text(WORKER_JS.read_text())
        (out / "config.capnp").write_text(CONFIG % COMPAT.group(1))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sock.set_inheritable(True)
        port = sock.getsockname()[1]
        command = [str(WORKERD), "serve", "config.capnp", f"--socket-fd=http={sock.fileno()}"]
        process = await trio.lowlevel.open_process(
            command,
            cwd=out,
            pass_fds=[sock.fileno()],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sock.close()
        client = HttpConnection(f"http://127.0.0.1:{port}")
        try:
            result = {}
            for path in ("/plain", "/rpc"):
                await _send(client, path, warmup)
                before = process_cpu_seconds(process.pid)
                await _send(client, path, count, gap_s)
                result[path.strip("/")] = round(
                    1000 * (process_cpu_seconds(process.pid) - before) / count, 3
                )
            return result
        finally:
            await client.aclose()
            process.kill()
            await process.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=2000, help="requests per route")
    parser.add_argument(
        "--gap-ms",
        type=float,
        default=0.0,
        help="idle time after each answer, in ms (default 0: closed loop); a process's CPU per "
        "request grows with it, so compare at the pace of the run the floor is set against",
    )
    args = parser.parse_args(argv)
    if args.gap_ms < 0:
        parser.error("--gap-ms must be 0 or more")
    start = time.perf_counter()
    floor = trio.run(measure_floor, args.count, 200, args.gap_ms / 1000)
    print(
        f"workerd floor, CPU ms per request: fetch {floor['plain']:.3f}, fetch + JSON.parse + "
        f"DO RPC {floor['rpc']:.3f} ({time.perf_counter() - start:.0f} s)"
    )


if __name__ == "__main__":
    main()
