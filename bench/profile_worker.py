"""Where does the Worker relay spend its CPU per query? A V8 CPU profile of workerd.

Starts the benchmark stack with the Worker relay under workerd (``--inspector-addr``, the Chrome
DevTools protocol), tdslite and the connector as their own processes, runs ``SELECT @n AS n``
closed loop for ``--seconds`` while V8's sampling profiler runs in the Worker's isolate, then
prints the top functions by self time and by inclusive time (bundle file:line), and writes the
``.cpuprofile`` (open it in Chrome DevTools or speedscope) to ``--out``.

Run: ``.venv/bin/python -m bench.profile_worker [--seconds 10] [--concurrency 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
from collections import Counter
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import trio
from websockets.sync.client import connect

from bench.stack import open_demo_stack
from bench.tunnel import warm_tunnel_plan
from edgetds.loadtest import run_loadtest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Cdp:
    """A minimal Chrome DevTools protocol client over one (blocking) WebSocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result


def _frames(profile: dict[str, Any]) -> tuple[Counter[str], Counter[str], int]:
    """(self samples, inclusive samples, total samples) per function of a V8 CPU profile."""
    nodes = {n["id"]: n for n in profile["nodes"]}
    parent = {c: n["id"] for n in profile["nodes"] for c in n.get("children", ())}

    def name(node: dict[str, Any]) -> str:
        frame = node["callFrame"]
        where = Path(frame.get("url") or "").name
        return f"{frame['functionName'] or '(anonymous)'} ({where}:{frame['lineNumber'] + 1})"

    def chain(ident: int) -> Iterator[str]:
        while ident in nodes:
            yield name(nodes[ident])
            ident = parent.get(ident, -1)

    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = profile.get("samples", [])
    for ident in samples:
        own[name(nodes[ident])] += 1
        for frame in set(chain(ident)):
            inclusive[frame] += 1
    return own, inclusive, len(samples)


async def run(seconds: float, concurrency: int, out: Path) -> None:
    inspector = f"127.0.0.1:{_free_port()}"
    os.environ["EDGETDS_WORKERD_INSPECTOR"] = inspector
    with tempfile.TemporaryDirectory(prefix="edgetds-profile-") as tmp:
        async with open_demo_stack(
            Path(tmp), connector="subprocess", tds_process=True, relay_kind="worker"
        ) as stack:
            plan = await warm_tunnel_plan(stack, concurrency, seconds)
            async with httpx.AsyncClient(trust_env=False) as client:
                targets = (await client.get(f"http://{inspector}/json")).json()
            with connect(targets[0]["webSocketDebuggerUrl"], max_size=None) as ws:
                cdp = _Cdp(ws)
                for method, params in (
                    ("Profiler.enable", {}),
                    ("Profiler.setSamplingInterval", {"interval": 200}),  # us
                    ("Profiler.start", {}),
                ):
                    await trio.to_thread.run_sync(lambda m=method, p=params: cdp.call(m, **p))
                result = (await run_loadtest(plan))["tunnel"]
                stopped = await trio.to_thread.run_sync(lambda: cdp.call("Profiler.stop"))
                profile = stopped["profile"]
    report(result, profile, out)


def report(result: Any, profile: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "worker.cpuprofile").write_text(json.dumps(profile))
    lat = result.latency_ms
    print(
        f"load during the profile: {result.count} queries, {result.throughput_qps} q/s, "
        f"p50 {lat['p50']} ms, errors {result.errors_by_code}"
    )
    own, inclusive, total = _frames(profile)
    idle = own.get("(idle) (:0)", 0)
    busy = max(total - idle, 1)
    print(f"\n== Worker isolate: {total} samples, {busy} not idle (percentages of those) ==")
    print("  top self time:")
    for frame, n in [(f, n) for f, n in own.most_common(30) if not f.startswith("(idle)")][:20]:
        print(f"    {100 * n / busy:5.1f}%  {frame}")
    print("  top inclusive time:")
    skip = ("(root)", "(idle)", "(program)")
    shown = [(f, n) for f, n in inclusive.most_common(60) if not f.startswith(skip)]
    for frame, n in shown[:25]:
        print(f"    {100 * n / busy:5.1f}%  {frame}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--out", default="bench-profile", help="directory for the profile")
    args = parser.parse_args(argv)
    trio.run(run, args.seconds, args.concurrency, Path(args.out))


if __name__ == "__main__":
    main()
