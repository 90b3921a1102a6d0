"""Tools for chaos and attack tests: a black-hole TCP proxy, a slow HTTP reader, real processes,
a load generator that classifies every answer, and the figures each chaos test reports.

    async with trio.open_nursery() as nursery:
        proxy = BlackHoleProxy(relay_port)
        await nursery.start(proxy.serve)     # connectors dial ws://127.0.0.1:{proxy.port}
        proxy.blackhole()                    # bytes vanish, sockets stay open (nobody is told)
        proxy.heal()                         # new connections go through again
        await proxy.cut()                    # or: close every live connection (FIN both ways)

    tally = Tally("relay_restart")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_load, http, url, token, tally, stop, sql_for)
    tally.check_statement_log(statement_log)  # each query's unique literal at most once
    record_result(tally.summary(reconnect_s=...))

Everything listens on 127.0.0.1; processes are killed when their block exits. Nothing here is a
stand-in for a component of ours: the proxy is the network, the reader is a (slow) client.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.support.waiting import eventually

__all__ = [
    "HYGIENE",
    "RESULTS_DIR",
    "BlackHoleProxy",
    "Hygiene",
    "Tally",
    "classify",
    "connections",
    "record_result",
    "rss_kib",
    "run_load",
    "slow_read",
    "spawn",
    "wait_connections",
]

ROOT = Path(__file__).resolve().parents[2]
#: Figures of the chaos tests, one JSON file per test (gitignored; read back for the report).
RESULTS_DIR = ROOT / "tests" / "chaos" / ".results"
#: Figures recorded in this pytest session (printed in the terminal summary).
SESSION_RESULTS: list[dict[str, Any]] = []


# -- the network ------------------------------------------------------------------------------


class _Link:
    """One proxied TCP connection; `dead` black-holes it for good (like a lost NAT mapping)."""

    def __init__(self, client: trio.SocketStream) -> None:
        self.client = client
        self.upstream: trio.SocketStream | None = None
        self.dead = False
        #: chunks the relay's side sent that arrived late (while the proxy lagged)
        self.late = 0


class BlackHoleProxy:
    """A loopback TCP proxy that forwards, cuts (FIN both ways) or black-holes traffic.

    A black hole swallows every byte in both directions while both sockets stay open, so neither
    end learns anything from the kernel: only its own keepalive can tell. Connections made during
    a black hole are accepted and swallowed too (a SYN that gets through to nowhere useful).
    `heal()` lets NEW connections through; the black-holed ones stay dead until an end closes.
    """

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.accepted = 0
        self.blackholed = False
        #: a slow way back: every chunk from the target is held this long before it is
        #: forwarded (0: none)
        self.lag_s = 0.0
        self._links: set[_Link] = set()

    @property
    def live(self) -> int:
        return len(self._links)

    @property
    def links(self) -> list[_Link]:
        return list(self._links)

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    def blackhole(self) -> None:
        self.blackholed = True
        for link in self._links:
            link.dead = True

    def heal(self) -> None:
        self.blackholed = False

    async def cut(self) -> int:
        """Close every live connection at once; returns how many were cut."""
        links = list(self._links)
        for link in links:
            await link.client.aclose()
            if link.upstream is not None:
                await link.upstream.aclose()
        return len(links)

    async def _handle(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        link = _Link(client)
        link.dead = self.blackholed
        self._links.add(link)
        try:
            if not link.dead:
                try:
                    link.upstream = await trio.open_tcp_stream(self.target_host, self.target_port)
                except OSError:
                    await client.aclose()
                    return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, link, client, link.upstream, nursery.cancel_scope)
                if link.upstream is not None:
                    nursery.start_soon(
                        self._pump, link, link.upstream, client, nursery.cancel_scope
                    )
        finally:
            self._links.discard(link)
            with trio.CancelScope(shield=True):
                await client.aclose()
                if link.upstream is not None:
                    await link.upstream.aclose()

    async def _pump(
        self,
        link: _Link,
        src: trio.SocketStream,
        dst: trio.SocketStream | None,
        scope: trio.CancelScope,
    ) -> None:
        send, queued = trio.open_memory_channel[tuple[float, bytes]](math.inf)
        async with trio.open_nursery() as delivery:
            delivery.start_soon(self._deliver, link, queued, dst)
            async with send:
                try:
                    while data := await src.receive_some(65536):
                        if not (link.dead or dst is None):  # else swallowed by the network
                            lag = self.lag_s if src is link.upstream else 0.0
                            send.send_nowait((trio.current_time() + lag, data))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        if link.dead:
            # the FIN (or RST) is swallowed too: the far end keeps its socket open and learns
            # nothing; the other pump keeps swallowing what it sends until the proxy stops
            await trio.sleep_forever()
        scope.cancel()

    @staticmethod
    async def _deliver(
        link: _Link,
        queued: trio.MemoryReceiveChannel[tuple[float, bytes]],
        dst: trio.SocketStream | None,
    ) -> None:
        """Forward each chunk at its due time: with `lag_s`, every chunk from the target arrives
        that much later (the network's latency; chunks do not queue up behind each other's
        delay)."""
        async with queued:
            async for due, data in queued:
                if due > trio.current_time():
                    await trio.sleep_until(due)
                    link.late += dst is link.client
                if link.dead or dst is None:
                    continue
                try:
                    await dst.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return


# -- a slow client ----------------------------------------------------------------------------


async def slow_read(
    url: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    seconds: float,
    bytes_per_second: int = 1,
    receive_buffer: int = 4096,
    status_line: bool = True,
) -> bytes:
    """POST over a raw socket with a tiny receive buffer, read `bytes_per_second` for `seconds`,
    then hang up. Returns what was read (headers included); with `status_line` the first 12
    bytes ("HTTP/1.1 200") are read at once so the caller can check the status."""
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    path = "/" + url.split("://", 1)[1].split("/", 1)[1]
    payload = json.dumps(body).encode()
    request = [
        f"POST {path} HTTP/1.1",
        f"Host: {host_port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, receive_buffer)
    await sock.connect((host, int(port)))
    stream = trio.SocketStream(sock)
    received = b""
    async with stream:
        await stream.send_all("\r\n".join(request).encode() + b"\r\n\r\n" + payload)
        while status_line and len(received) < 12:
            chunk = await stream.receive_some(12 - len(received))
            if not chunk:
                return received
            received += chunk
        with trio.move_on_after(seconds):
            while True:
                chunk = await stream.receive_some(bytes_per_second)
                if not chunk:
                    break
                received += chunk
                await trio.sleep(1.0)
    return received


# -- processes --------------------------------------------------------------------------------


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    """A memory figure of a live process from /proc (VmRSS now, VmHWM peak), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field_name} not in /proc/{pid}/status")


@asynccontextmanager
async def spawn(
    argv: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None
) -> AsyncIterator[trio.Process]:
    """Run `argv` with stdout+stderr appended to `log`; SIGKILL it when the block exits."""
    handle = log.open("ab")
    process = await trio.lowlevel.open_process(
        list(argv),
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        cwd=ROOT,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        with trio.CancelScope(shield=True):
            await process.wait()
        handle.close()


def edgetds(*args: str) -> list[str]:
    """The `edgetds ...` command line of this checkout (same interpreter)."""
    return [sys.executable, "-m", "edgetds", *args]


def read_log(path: Path, offset: int = 0) -> str:
    """A log file's text from byte `offset` ("" while it does not exist)."""
    return path.read_bytes()[offset:].decode(errors="replace") if path.exists() else ""


async def wait_for_line(log: Path, needle: str, process: trio.Process) -> str:
    """Wait until `needle` appears in a process's log; fail if the process exits first."""
    found: list[str] = []

    def logged() -> bool:
        text = read_log(log)
        found.extend(line for line in text.splitlines() if needle in line)
        if not found and process.returncode is not None:
            raise AssertionError(f"{process.args!r} exited {process.returncode}:\n{text[-2000:]}")
        return bool(found)

    await eventually(logged)
    return found[0]


async def connections(http: httpx.AsyncClient, http_url: str, tunnel: str, token: str) -> int:
    """Open connector connections of the tunnel per the relay's status API (-1: relay down)."""
    try:
        response = await http.get(
            f"{http_url}/v1/tunnels/{tunnel}/status",
            headers={"Authorization": f"Bearer {token}"},
        )
    except httpx.TransportError:
        return -1
    if response.status_code != 200:
        return -1
    return int(response.json()["connections"])


async def wait_connections(
    http: httpx.AsyncClient, http_url: str, tunnel: str, token: str, count: int
) -> float:
    """Wait until the relay counts exactly `count` connections; returns the seconds it took."""
    started = trio.current_time()

    async def counted() -> bool:
        return await connections(http, http_url, tunnel, token) == count

    await eventually(counted)
    return trio.current_time() - started


# -- load and its outcomes --------------------------------------------------------------------


#: A body whose last row line was cut mid-line and then got the terminal record glued to it: the
#: client cannot parse the last line (the Worker relay once answered a reset so).
PARTIAL_LINE = "a row line cut mid-line, then the terminal record on the same line"


def classify(status: int, body: bytes) -> tuple[str, str]:
    """("ok", "") | ("typed", code) | ("lost", why) for one complete HTTP answer.

    ok: 200 whose last line is a done record. typed: a 200 whose last line is an error record, or
    a non-200 whose JSON body is {"error": {"code": ...}}. Anything else lost the query without
    telling the client (a 200 without a terminal record is silent truncation).
    """
    text = body.decode("utf-8", "replace")
    last = text.rstrip("\n").rsplit("\n", 1)[-1] if text.strip() else ""
    try:
        record = json.loads(last) if last else None
    except ValueError:
        if '{"error":{"code":' in last[1:]:
            return "lost", PARTIAL_LINE
        return "lost", f"{status}: last line is not JSON"
    if not text.endswith("\n") and status == 200:
        return "lost", "200 body does not end with a newline (truncated)"
    if isinstance(record, dict) and isinstance(record.get("error"), dict):
        code = record["error"].get("code")
        if isinstance(code, str) and code:
            return "typed", code
    if status == 200 and isinstance(record, dict) and isinstance(record.get("done"), dict):
        return "ok", ""
    return "lost", f"{status}: no terminal record"


@dataclass
class Tally:
    """Counts of one chaos test: every query sent ends up in exactly one bucket."""

    name: str
    sent: int = 0
    ok: int = 0
    typed: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    #: the client's own HTTP connection to the relay failed (the relay process died): the
    #: client saw an error, but no record; counted apart from `lost` (which is silent).
    client_errors: Counter[str] = field(default_factory=Counter)
    tags: dict[str, str] = field(default_factory=dict)  # unique literal -> outcome
    latencies: list[float] = field(default_factory=list)
    #: (trio time it ended, outcome, detail, seconds it took, tag) per query, in order
    events: list[tuple[float, str, str, float, str]] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    #: code -> the first message seen with it (for assertion messages)
    samples: dict[str, str] = field(default_factory=dict)

    def new_tag(self) -> str:
        return f"chaos-{self.name}-{uuid.uuid4().hex[:12]}"

    def add(self, tag: str, outcome: str, detail: str, seconds: float) -> None:
        self.latencies.append(seconds)
        self.events.append((trio.current_time(), outcome, detail, seconds, tag))
        if outcome == "ok":
            self.ok += 1
        elif outcome == "typed":
            self.typed[detail] += 1
        elif outcome == "client_error":
            self.client_errors[detail] += 1
        else:
            self.lost.append(f"{tag}: {detail}")
        self.tags[tag] = outcome

    @property
    def accounted(self) -> int:
        return (
            self.ok + sum(self.typed.values()) + len(self.lost) + sum(self.client_errors.values())
        )

    def first_ok_after(self, when: float) -> float | None:
        """Seconds from `when` to the first query that ended ok after it (None: none did)."""
        ends = [e[0] for e in self.events if e[1] == "ok" and e[0] > when]
        return min(ends) - when if ends else None

    def check_statement_log(self, entries: Iterable[Mapping[str, Any]]) -> Counter[str]:
        """Count each query's literal in tdslite's statement log; records duplicates."""
        seen: Counter[str] = Counter()
        for entry in entries:
            statement = str(entry.get("statement", ""))
            start = statement.find(f"chaos-{self.name}-")
            if start >= 0:
                seen[statement[start:].split("'", 1)[0]] += 1
        self.duplicated = sorted(tag for tag, n in seen.items() if n > 1)
        return seen

    def summary(self, **figures: Any) -> dict[str, Any]:
        self.figures.update(figures)
        return {
            "test": self.name,
            "sent": self.sent,
            "ok": self.ok,
            "typed_error": sum(self.typed.values()),
            "typed_codes": dict(self.typed),
            "client_errors": dict(self.client_errors),
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "max_latency_s": round(max(self.latencies, default=0.0), 3),
            **self.figures,
        }


async def one_query(
    http: httpx.AsyncClient,
    url: str,
    token: str,
    tally: Tally,
    sql_for: Callable[[str], str],
    *,
    params: Mapping[str, Any] | None = None,
    timeout_s: float = 30.0,
    tag: str | None = None,
    first_bytes: Callable[[], None] | None = None,
) -> tuple[str, str]:
    """Send one tagged query and file its outcome in `tally`; ``first_bytes`` is called once the
    first bytes of the answer's body arrived (the answer is streaming)."""
    tag = tag or tally.new_tag()
    tally.sent += 1
    started = trio.current_time()
    body = {"sql": sql_for(tag), "params": dict(params or {})}
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with trio.fail_after(timeout_s):
            async with http.stream("POST", url, json=body, headers=headers) as response:
                chunks: list[bytes] = []
                async for chunk in response.aiter_bytes():
                    if not chunks and first_bytes is not None:
                        first_bytes()
                    chunks.append(chunk)
        content = b"".join(chunks)
        outcome, detail = classify(response.status_code, content)
        key = detail if outcome == "typed" else outcome
        if outcome != "ok" and key not in tally.samples:
            tally.samples[key] = content.decode(errors="replace")[-400:]
    except httpx.TransportError as exc:
        outcome, detail = "client_error", type(exc).__name__
    except trio.TooSlowError:
        outcome, detail = "lost", f"no answer within {timeout_s} s"
    tally.add(tag, outcome, detail, trio.current_time() - started)
    return outcome, detail


async def run_load(
    http: httpx.AsyncClient,
    url: str,
    token: str,
    tally: Tally,
    stop: trio.Event,
    sql_for: Callable[[str], str],
    *,
    workers: int = 4,
    pause_s: float = 0.02,
    timeout_s: float = 30.0,
) -> None:
    """`workers` clients each send tagged queries back to back until `stop` is set."""

    async def worker() -> None:
        while not stop.is_set():
            outcome, _ = await one_query(http, url, token, tally, sql_for, timeout_s=timeout_s)
            # a relay that is down refuses at once: do not spin while it is away
            await trio.sleep(pause_s if outcome != "client_error" else 0.1)

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker)


def record_result(result: Mapping[str, Any]) -> None:
    """Print one summary line and write tests/chaos/.results/<test>.json."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{result['test']}.json").write_text(json.dumps(result, indent=2) + "\n")
    SESSION_RESULTS.append(dict(result))
    print("\n" + summary_line(result))


def summary_line(result: Mapping[str, Any]) -> str:
    extras = {
        k: v
        for k, v in result.items()
        if k not in {"test", "sent", "ok", "typed_error", "lost", "duplicated", "typed_codes"}
    }
    return (
        f"chaos {result['test']}: sent {result['sent']} / ok {result['ok']} / typed error "
        f"{result['typed_error']} {result.get('typed_codes', {})} / lost {result['lost']} / "
        f"duplicated {result['duplicated']} / {extras}"
    )


# -- log hygiene ------------------------------------------------------------------------------


@dataclass
class Hygiene:
    """Secrets used by the chaos/attack tests and the log/audit files they produced; the last
    test of tests/chaos greps every file for every secret."""

    secrets: dict[str, str] = field(default_factory=dict)  # value -> what it is
    files: set[Path] = field(default_factory=set)

    def secret(self, value: str, what: str) -> str:
        if value:
            self.secrets[value] = what
        return value

    def file(self, *paths: Path) -> None:
        self.files.update(paths)

    def leaks(self) -> list[str]:
        found = []
        for path in sorted(self.files):
            if not path.exists():
                continue
            text = path.read_text(errors="replace")
            for value, what in self.secrets.items():
                if value in text:
                    found.append(f"{path}: contains {what}")
        return found


#: One registry per pytest session (tests/attacks and tests/chaos add to it).
HYGIENE = Hygiene()
