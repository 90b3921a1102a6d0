"""tdslite's Python work per request, counted: the bytecode instructions each function runs for
one captured request (`bench.tdslite_replay`'s two forms, tunnel and direct), by tracing one
request with ``sys.settrace`` opcode events. Deterministic, and seconds where callgrind takes
minutes; C code (builtins, lru caches, SQLite) is not counted, so it tells where the Python work
is, not the whole cost (``bench.tdslite_replay --callgrind`` counts machine instructions).

The request is sent by a blocking client to a tdslite server in this process, on a connection
warmed up by the same requests, and traced on the server's event loop, where tdslite answers
such a request (`Dispatcher.runs_inline`): its reading and writing (trio) is counted too, the
same for both forms.

Run: ``.venv/bin/python -m bench.tdslite_opcodes [--lines 30]`` (with ``--lines``, the busiest
lines of the tunnel form too).
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

import trio

import tdslite
from bench.tdslite_replay import USERS, Capture, _capture, _Client

WARM_UP = 30

Counts = tuple[collections.Counter[str], collections.Counter[tuple[str, int]]]


def _tracer(counts: Counts) -> Any:
    functions, lines = counts

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            where = f"{Path(code.co_filename).name}:{code.co_name}"
            functions[where] += 1
            lines[(where, frame.f_lineno)] += 1
        return trace

    return trace


async def _measure(form: str, capture: Capture) -> Counts:
    """One request of ``capture`` traced on the server's event loop (where tdslite answers it:
    `Dispatcher.runs_inline`), after a warm-up on the same connection."""
    counts: Counts = (collections.Counter(), collections.Counter())
    with tempfile.TemporaryDirectory() as tmp:
        users = Path(tmp) / "users.toml"
        users.write_text(USERS)
        async with tdslite.open_server(db=":memory:", users=users) as server:
            token = trio.lowlevel.current_trio_token()

            def client() -> None:
                conn = _Client(server.port)
                try:
                    for message in capture.setup:
                        conn.exchange(message)
                    for i in range(WARM_UP):
                        conn.exchange(capture.instance(i))
                    trio.from_thread.run_sync(sys.settrace, _tracer(counts), trio_token=token)
                    conn.exchange(capture.instance(7))
                    trio.from_thread.run_sync(sys.settrace, None, trio_token=token)
                finally:
                    conn.close()

            await trio.to_thread.run_sync(client)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=0, help="busiest lines of the tunnel form")
    args = parser.parse_args(argv)
    captures = trio.run(_capture)
    results = {form: trio.run(_measure, form, capture) for form, capture in captures.items()}
    tunnel, direct = results["tunnel"][0], results["direct"][0]
    total_t, total_d = sum(tunnel.values()), sum(direct.values())
    print(f"Python opcodes per request: tunnel {total_t}, direct {total_d}, "
          f"tunnel / direct {total_t / total_d:.3f}x")  # fmt: skip
    print(f"{'extra':>6} {'tunnel':>6} {'direct':>6}  function")
    for name in sorted(set(tunnel) | set(direct), key=lambda k: direct[k] - tunnel[k]):
        if tunnel[name] != direct[name]:
            print(f"{tunnel[name] - direct[name]:6d} {tunnel[name]:6d} {direct[name]:6d}  {name}")
    for (name, line), n in results["tunnel"][1].most_common(args.lines):
        print(f"  {n:5d}  {name} line {line}")


if __name__ == "__main__":
    main()
