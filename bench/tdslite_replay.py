"""tdslite's own work per request, replayed: the bytes a client sends, captured once, sent again
and again to a tdslite process by a plain blocking socket client (nothing else in that process).

Two request forms, each on a connection of its own:

- tunnel: what the connector sends per one-shot SELECT on a reused pooled connection:
  RESETCONNECTION, the ``sp_set_session_context`` batch and ``SELECT @n AS n`` as two RPCs of ONE
  request (`connector.execute.ExecRequest.one_request`);
- direct: ``SELECT @n AS n`` alone from python-tds, as the connector binds it (`bench.tunnel`'s
  baseline).

The requests are captured from the real clients through a TCP relay (a tdslite in this process),
then each replayed request gets its own ``@n`` value and query id, patched into the captured bytes
(same length). The server is ``edgetds tdslite serve`` from ``--server-dir`` (a worktree, with its
own ``.venv``): the code before and after can be compared with the same requests. Per form:
tdslite's CPU per request (bench/cputime.py), or with ``--callgrind`` the instructions per request
(callgrind switched on only around the measured requests, ``callgrind_control -i on|off``); and a
SHA-256 of every reply byte of the measured requests, which must not change between versions.

``--gap-ms``: the client waits that long after each measured reply, as tdslite waits between two
tunnelled queries: the same requests at another pace. Here, 4 ms between requests made the
tunnel form's instructions per request 6% more (571,844 -> 605,646: the event loop's wait) and
its CPU time 2.4 times (0.26 -> 0.62 ms; direct 0.21 -> 0.50 ms; colder caches).

Run: ``.venv/bin/python -m bench.tdslite_replay [--count 5000] [--rounds 3] [--callgrind]
[--server-dir ../base] [--gap-ms 0]``
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytds
import trio

import tdslite
from bench.stack import _setup as setup_database
from bench.tdslite_throughput import cpu_seconds
from connector.config import DatabaseConfig, LoginConfig
from connector.encode import BoundParam
from connector.execute import ExecRequest, execute, run_statement
from connector.pool import LoginPool
from connector.results import CancelToken
from tests.support.connector_stack import TDSLITE_USERS

USERS = TDSLITE_USERS + '\n[users.owner]\npassword = "owner-pw"\nrole = "admin"\n'
#: the captured requests carry these; each replayed request has its own in their place
N_MARK = 0x5EED5EED - 0x40000000  # an int value no other field of the request holds
QID_MARK = "qid-97531"
RPC, EOM = 0x03, 0x01


@dataclass
class Capture:
    """One connection's client messages: (packets as sent) up to the measured request, then the
    measured request (its packets)."""

    setup: list[bytes]
    request: bytes

    def instance(self, i: int) -> bytes:
        """The measured request with its own ``@n`` and query id (both the same length)."""
        out = self.request.replace(
            N_MARK.to_bytes(4, "little"), (i % 1000000).to_bytes(4, "little")
        )
        qid = f"qid-{i % 100000:05d}"
        return out.replace(QID_MARK.encode("utf-16-le"), qid.encode("utf-16-le"))


# --- capture -------------------------------------------------------------------------------------


class _Recorder:
    """A TCP relay in front of a server that keeps every client message (its packets, as sent)
    per connection, in order."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.connections: list[list[bytes]] = []

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        messages: list[bytes] = []
        self.connections.append(messages)
        async with client, await trio.open_tcp_stream("127.0.0.1", self.target) as upstream:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, client, upstream, messages, nursery.cancel_scope)
                nursery.start_soon(self._pump, upstream, client, None, nursery.cancel_scope)

    @staticmethod
    async def _pump(
        src: trio.SocketStream,
        dst: trio.SocketStream,
        messages: list[bytes] | None,
        scope: trio.CancelScope,
    ) -> None:
        buffer = message = b""
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
                if messages is None:
                    continue
                buffer += data
                while len(buffer) >= 8 and len(buffer) >= int.from_bytes(buffer[2:4], "big"):
                    size = int.from_bytes(buffer[2:4], "big")
                    message += buffer[:size]
                    if buffer[1] & EOM:
                        messages.append(message)
                        message = b""
                    buffer = buffer[size:]
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()


def _direct(port: int, database: str) -> None:
    with pytds.connect(
        "127.0.0.1", port=port, database=database, user="reader", password="reader-pw",
        autocommit=True,
    ) as conn:  # fmt: skip
        with conn.cursor() as cursor:
            for n in (1, N_MARK):
                run_statement(cursor, "SELECT @n AS n", [BoundParam("@n", "int", n)])
                assert cursor.fetchall() == [(n,)]
                while cursor.nextset():
                    pass


class _Discard:
    async def send_columns(self, data: bytes, *, flush: bool = True) -> None:
        pass

    async def send_rows(self, data: bytes, *, flush: bool = True) -> None:
        pass

    def hold(self, columns: bytes | None, rows: bytes) -> bool:
        return True


async def _capture() -> dict[str, Capture]:
    with tempfile.TemporaryDirectory() as tmp:
        users = Path(tmp) / "users.toml"
        users.write_text(USERS)
        async with tdslite.open_server(db=":memory:", users=users) as server:
            recorder = _Recorder(server.port)
            async with trio.open_nursery() as nursery:
                await nursery.start(recorder.serve)
                database = await trio.to_thread.run_sync(setup_database, "127.0.0.1", recorder.port)
                await trio.to_thread.run_sync(_direct, recorder.port, database)
                db = DatabaseConfig(
                    host="127.0.0.1",
                    port=recorder.port,
                    database=database,
                    logins={"reader": LoginConfig("reader", "reader", "reader-pw", pool_size=1)},
                    validate_host=False,
                )
                pool = LoginPool(db, db.logins["reader"], query_timeout_s=60)
                try:
                    for n, qid in ((1, "qid-00001"), (N_MARK, QID_MARK)):
                        req = ExecRequest(
                            query_id=qid,
                            sql="SELECT @n AS n",
                            params=[BoundParam("@n", "int", n)],
                            context={
                                "edgetds.sub": "bench",
                                "edgetds.iss": "https://idp",
                                "edgetds.query_id": qid,
                            },  # fmt: skip
                            one_request=True,
                        )
                        await execute(pool, req, _Discard(), CancelToken())
                finally:
                    await pool.aclose()
                nursery.cancel_scope.cancel()
    _, direct, tunnel = recorder.connections
    for conn in (direct, tunnel):
        mark = N_MARK.to_bytes(4, "little")
        assert sum(mark in m for m in conn) == 1, "one request has the mark"
        assert mark in conn[-1], "the last request has the mark"
    assert tunnel[-1][1] & 0x08, "the tunnel's measured request carries RESETCONNECTION"
    return {
        "tunnel": Capture(tunnel[:-1], tunnel[-1]),
        "direct": Capture(direct[:-1], direct[-1]),
    }


# --- replay --------------------------------------------------------------------------------------


class _Client:
    """A blocking TDS client that sends messages as they were captured and reads whole replies."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()

    def exchange(self, message: bytes) -> bytes:
        self.sock.sendall(message)
        reply = bytearray()
        while True:
            while len(self.buffer) < 8 or len(self.buffer) < int.from_bytes(
                self.buffer[2:4], "big"
            ):
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("tdslite closed the connection")
                self.buffer += data
            size = int.from_bytes(self.buffer[2:4], "big")
            last = self.buffer[1] & EOM
            reply += self.buffer[:size]
            del self.buffer[:size]
            if last:
                return bytes(reply)

    def close(self) -> None:
        self.sock.close()


@contextmanager
def _server(server_dir: Path, workdir: Path, callgrind: bool) -> Iterator[tuple[int, int]]:
    """``edgetds tdslite serve`` from ``server_dir``: (port, pid)."""
    users = workdir / "users.toml"
    users.write_text(USERS)
    cmd = [str(server_dir / ".venv" / "bin" / "python"), "-m", "edgetds", "tdslite", "serve",
           "--port", "0", "--db", ":memory:", "--users", str(users)]  # fmt: skip
    if callgrind:
        out = workdir / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
               *cmd]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    with (workdir / "stderr").open("w+") as errors:
        proc = subprocess.Popen(
            cmd, cwd=server_dir, stdout=subprocess.PIPE, stderr=errors, text=True, env=env
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if "listening on" not in line:
                errors.seek(0)
                raise RuntimeError(f"tdslite did not start: {line!r} {errors.read()[-2000:]}")
            yield int(line.rsplit(":", 1)[1]), proc.pid
        finally:
            proc.terminate()
            proc.wait(60)


def _callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def _replay(
    port: int, pid: int, capture: Capture, count: int, callgrind: Path | None, gap_s: float = 0.0
) -> tuple[float, str]:
    """(tdslite's CPU ms, or instructions, per request; SHA-256 of the replies). ``gap_s``: idle
    time after each measured reply before the next request."""
    client = _Client(port)
    try:
        for message in capture.setup:
            client.exchange(message)
        for i in range(50):  # warm up: caches, first-call work
            client.exchange(capture.instance(i))
        digest = hashlib.sha256()
        if callgrind is not None:
            _callgrind(pid, "-z")
            _callgrind(pid, "-i", "on")
        before = cpu_seconds(pid)
        for i in range(count):
            digest.update(client.exchange(capture.instance(i)))
            if gap_s:
                time.sleep(gap_s)  # the pace under study, not a synchronisation
        used = cpu_seconds(pid) - before
        if callgrind is not None:
            _callgrind(pid, "-i", "off")
            _callgrind(pid, "-d")
            return _instructions(callgrind) / count, digest.hexdigest()
        return 1000 * used / count, digest.hexdigest()
    finally:
        client.close()


def _instructions(out: Path) -> int:
    """Instructions of the first dump callgrind_control asked for (``out``.1)."""
    dump = out.with_name(out.name + ".1")
    for line in dump.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=5000, help="requests per form and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--callgrind", action="store_true", help="count instructions instead")
    parser.add_argument(
        "--server-dir", type=Path, default=Path.cwd(), help="the tree whose tdslite runs"
    )
    parser.add_argument("--form", choices=["tunnel", "direct"], action="append")
    parser.add_argument(
        "--gap-ms",
        type=float,
        default=0.0,
        help="idle time between two measured requests (default 0: back to back); tdslite's CPU "
        "per request grows with it (colder caches), as between two tunnelled queries",
    )
    args = parser.parse_args(argv)
    captures = trio.run(_capture)
    forms = args.form or ["tunnel", "direct"]
    unit = "instructions" if args.callgrind else "CPU ms"
    figures: dict[str, list[float]] = {form: [] for form in forms}
    digests: dict[str, set[str]] = {form: set() for form in forms}
    for _ in range(args.rounds):
        for form in forms:
            with (
                tempfile.TemporaryDirectory() as tmp,
                _server(args.server_dir.resolve(), Path(tmp), args.callgrind) as (port, pid),
            ):
                out = Path(tmp) / "callgrind.out" if args.callgrind else None
                started = time.perf_counter()
                value, digest = _replay(
                    port, pid, captures[form], args.count, out, args.gap_ms / 1000
                )
                figures[form].append(value)
                digests[form].add(digest)
                print(
                    f"{form:6}  {unit} per request {value:12.4f}  replies {digest[:16]}  "
                    f"({time.perf_counter() - started:.1f} s)",
                    flush=True,
                )
    for form, values in figures.items():
        print(f"{form:6}  median {unit} per request {statistics.median(values):.4f}")
    if len(forms) == 2:
        ratio = statistics.median(figures["tunnel"]) / statistics.median(figures["direct"])
        print(f"tunnel / direct: {ratio:.3f}x")
    for form, found in digests.items():
        if len(found) != 1:
            print(f"{form}: replies differ between rounds", file=sys.stderr)


if __name__ == "__main__":
    main()
