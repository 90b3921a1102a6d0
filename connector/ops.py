"""The connector's operations surface: Prometheus metrics, ``/healthz``, ``/ready``, sd_notify.

The connector runtime owns an `Ops` object and tells it what happens; a small HTTP server on a
localhost port (``[ops] listen = "127.0.0.1:9464"``) exposes it::

    ops = Ops(connector_id="conn-1", tunnel="demo")
    ops.observe_links(connector.link_statistics)     # RTT per connection, read at scrape time
    ops.observe_pools(pools.statistics)              # pool usage per login, read at scrape time
    async with ops.serve("127.0.0.1", 9464, ready_check=database_probe(pools)) as server:
        ops.connection_up(url)                       # a relay connection verified HELLO (READY)
        ops.query_finished(role="analyst", outcome="ok", duration_s=0.01, rows=3, nbytes=120)
        ops.set_draining()                           # /ready answers 503 from now on

Routes (GET only): ``/metrics`` (Prometheus text format, from a dedicated `CollectorRegistry`, so
nothing else in the process leaks into it), ``/healthz`` (200 while the process runs), ``/ready``
(200 only when at least one relay connection is registered AND the database answers; 503 with the
reason as soon as draining starts; a JSON body with the counts either way).

Why the database check is cached: a probe borrows a pooled connection, and under load every
connection may be busy with real queries. A query that succeeded within ``ready_cache_s`` proves
the database answers, so a busy connector never reports itself unready (a health check that lies
under load is worse than none). Otherwise the probe runs with ``ready_timeout_s``.

Labels stay bounded: ``outcome`` is an error code from the registry in SPEC.md, ``role`` a policy
role, ``reason`` a close/refusal code, ``relay`` a configured relay URL. Never a user, token, SQL
text or parameter value.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from asgiapp import answer_lifespan
from connector import sdnotify
from protocol import REFUSALS, __version__

__all__ = ["Ops", "OpsServer", "ReadyCheck", "database_probe", "probe_login", "watch_logins"]

#: Raise (any Exception, with a message an operator can act on) when the database does not answer.
ReadyCheck = Callable[[], Awaitable[None]]

log = logging.getLogger("edgetds.connector.ops")

PREFIX = "edgetds_connector"
#: query durations: 1 ms .. 5 min
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: reconnect backoff: full jitter below a ceiling that doubles from backoff_base_s to backoff_cap_s
BACKOFF_BUCKETS = (0.1, 0.5, 1, 2, 4, 8, 16, 30, 60, 120)


class _LinkStats(Protocol):  # connector.tunnel.LinkStats (read-only, frozen)
    @property
    def url(self) -> str: ...
    @property
    def session_id(self) -> str | None: ...
    @property
    def rtt_ms(self) -> float | None: ...
    @property
    def open_streams(self) -> int: ...


class _PoolStats(Protocol):  # connector.pool.PoolStats
    @property
    def login(self) -> str: ...
    @property
    def idle(self) -> int: ...
    @property
    def in_use(self) -> int: ...
    @property
    def size(self) -> int: ...


class _FrameTally:
    """The frames and bytes per direction, counted as plain integers on the event loop (four
    prometheus ``inc`` calls per query otherwise) and added to their counters when the registry
    is collected: registered ahead of the counters, it runs first at every scrape."""

    def __init__(self) -> None:
        #: frames in, bytes in, frames out, bytes out (only the event loop adds to them)
        self.counts = [0, 0, 0, 0]
        self._added = [0, 0, 0, 0]
        self._lock = threading.Lock()
        #: the counters' children, in the order of ``counts``
        self.children: tuple[Counter, ...] = ()

    def describe(self) -> list[Metric]:
        return []  # no series of its own

    def collect(self) -> list[Metric]:
        with self._lock:  # two scrapes at once add each count once
            for i, child in enumerate(self.children):
                total = self.counts[i]
                if total != self._added[i]:
                    child.inc(total - self._added[i])
                    self._added[i] = total
        return []


class _ScrapeCollector:
    """Gauges read at scrape time from the runtime's own statistics (no stale series)."""

    def __init__(self) -> None:
        self.links: Callable[[], Iterable[_LinkStats]] | None = None
        self.pools: Callable[[], Iterable[_PoolStats]] | None = None

    def collect(self) -> Iterable[Metric]:
        rtt = GaugeMetricFamily(
            f"{PREFIX}_relay_rtt_seconds",
            "WebSocket ping round-trip time per relay connection",
            labels=["relay", "session"],
        )
        streams = GaugeMetricFamily(
            f"{PREFIX}_relay_open_streams",
            "Queries open on each relay connection",
            labels=["relay", "session"],
        )
        for link in self.links() if self.links is not None else ():
            labels = [link.url, link.session_id or ""]
            streams.add_metric(labels, link.open_streams)
            if link.rtt_ms is not None:
                rtt.add_metric(labels, link.rtt_ms / 1000)
        usage = GaugeMetricFamily(
            f"{PREFIX}_pool_connections",
            "SQL Server connections per login pool, by state",
            labels=["login", "state"],
        )
        size = GaugeMetricFamily(
            f"{PREFIX}_pool_size", "Largest number of connections per login pool", labels=["login"]
        )
        for pool in self.pools() if self.pools is not None else ():
            usage.add_metric([pool.login, "in_use"], pool.in_use)
            usage.add_metric([pool.login, "idle"], pool.idle)
            size.add_metric([pool.login], pool.size)
        return [rtt, streams, usage, size]


@dataclass(frozen=True)
class ReadyState:
    """What ``/ready`` answered (also its JSON body)."""

    ready: bool
    reason: str
    connections: int
    relays: dict[str, int]
    draining: bool
    database: str
    in_flight: int

    def body(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode() + b"\n"


class Ops:
    """Metrics and readiness of one connector process. All methods are cheap and never raise."""

    def __init__(
        self,
        *,
        connector_id: str,
        tunnel: str,
        registry: CollectorRegistry | None = None,
        ready_cache_s: float = 2.0,
        ready_timeout_s: float = 3.0,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.ready_cache_s = ready_cache_s
        self.ready_timeout_s = ready_timeout_s
        self._clock = clock
        self._relays: dict[str, int] = {}
        self._draining = False
        self._notified_ready = False
        self._last_db_ok = -1e18
        self._in_flight = 0
        self._status = "starting"
        #: logins whose last check failed -> why (connector.runtime checks them all)
        self.logins_failing: dict[str, str] = {}
        r, p = self.registry, PREFIX
        info = Info(f"{p}", "The connector's identity", registry=r)
        info.info({"connector_id": connector_id, "tunnel": tunnel, "version": __version__})
        self.connections = Gauge(
            f"{p}_relay_connections",
            "Relay connections registered (HELLO verified, READY sent), per relay URL",
            ["relay"],
            registry=r,
        )
        self.reconnects = Counter(
            f"{p}_reconnects",
            "Relay connections that ended and were redialled",
            ["reason"],
            registry=r,
        )
        self.backoff = Histogram(
            f"{p}_reconnect_backoff_seconds",
            "Full-jitter delays a connection slot waited before redialling",
            buckets=BACKOFF_BUCKETS,
            registry=r,
        )
        self.queries = Counter(
            f"{p}_queries",
            "Queries finished, by role and outcome (ok or an error code)",
            ["role", "outcome"],
            registry=r,
        )
        self.in_flight = Gauge(f"{p}_queries_in_flight", "Queries running now", registry=r)
        # read at scrape time: no locked gauge update at each query's start and end
        self.in_flight.set_function(lambda: self._in_flight)
        self.duration = Histogram(
            f"{p}_query_duration_seconds",
            "Query time from QUERY to DONE/ERROR",
            ["role"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.rows = Counter(f"{p}_result_rows", "Rows streamed back", ["role"], registry=r)
        self.result_bytes = Counter(
            f"{p}_result_bytes", "Result bytes (NDJSON) streamed back", ["role"], registry=r
        )
        self._tally = _FrameTally()
        r.register(self._tally)  # before the frame counters: see _FrameTally
        self.frames = Counter(
            f"{p}_frames", "edgetds/1 frames, by direction (in/out)", ["direction"], registry=r
        )
        self.frame_bytes = Counter(
            f"{p}_frame_bytes",
            "edgetds/1 bytes on the WebSocket, by direction (in/out)",
            ["direction"],
            registry=r,
        )
        self.stalls = Counter(
            f"{p}_backpressure_stalls",
            "Times a result stream waited for CREDIT (the client reads slower than SQL Server)",
            registry=r,
        )
        self.refusals = Counter(
            f"{p}_refusals",
            "Queries refused before reaching SQL Server (auth, policy, a malformed or duplicate "
            "request, too many queries)",
            ["reason"],
            registry=r,
        )
        self.draining = Gauge(f"{p}_draining", "1 once draining started", registry=r)
        self.sessions_open = Gauge(
            f"{p}_sessions_open", "Sessions (transactions across requests) open now", registry=r
        )
        self.sessions_ended = Counter(
            f"{p}_sessions_ended",
            "Sessions ended, by reason (committed, rolled_back, idle_timeout, transport.lost, ...)",
            ["reason"],
            registry=r,
        )
        self.login_ok = Gauge(
            f"{p}_database_login_ok",
            "1 when the login's last check (log in + SELECT 1) worked, 0 when it failed",
            ["login"],
            registry=r,
        )
        self._scrape = _ScrapeCollector()
        r.register(self._scrape)
        # the labelled children of the per-query and per-frame metrics, looked up once (the
        # label sets are few: directions, the policy's roles, outcome codes)
        self._tally.children = (
            self.frames.labels("in"),
            self.frame_bytes.labels("in"),
            self.frames.labels("out"),
            self.frame_bytes.labels("out"),
        )
        self._by_role: dict[str, tuple[Histogram, Counter, Counter]] = {}
        self._by_outcome: dict[tuple[str, str], Counter] = {}

    # -- what the runtime reports --------------------------------------------------------------

    def observe_links(self, stats: Callable[[], Iterable[_LinkStats]]) -> None:
        """Read RTT and open streams per connection from `stats()` at every scrape."""
        self._scrape.links = stats

    def observe_pools(self, stats: Callable[[], Iterable[_PoolStats]]) -> None:
        """Read pool usage per login from `stats()` at every scrape."""
        self._scrape.pools = stats

    def connection_up(self, relay_url: str) -> None:
        """A relay connection is registered. The first one tells systemd READY=1."""
        self._relays[relay_url] = self._relays.get(relay_url, 0) + 1
        self.connections.labels(relay_url).set(self._relays[relay_url])
        self._status = f"connected to {relay_url}"
        if not self._notified_ready and not self._draining:
            self._notified_ready = True
            sdnotify.notify(f"READY=1\nSTATUS={self.status_line()}")

    def status_line(self) -> str:
        """systemd's STATUS: the relay side, then any login that fails."""
        if not self.logins_failing:
            return self._status
        failing = ", ".join(sorted(self.logins_failing))
        started = "started, " if self._notified_ready else ""
        return f"{started}{self._status}; database login failing: {failing}"

    def login_checked(self, login: str, failure: str | None) -> None:
        """A login was checked: ``failure`` is why it failed, None when it worked."""
        self.login_ok.labels(login).set(0 if failure else 1)
        before = set(self.logins_failing)
        if failure:
            self.logins_failing[login] = failure
        else:
            self.logins_failing.pop(login, None)
        if set(self.logins_failing) != before and not self._draining:
            sdnotify.notify(f"STATUS={self.status_line()}")

    def connection_down(self, relay_url: str, reason: str) -> None:
        """A registered relay connection ended (`reason`: goaway, drained, lost, ...)."""
        count = max(0, self._relays.get(relay_url, 0) - 1)
        self._relays[relay_url] = count
        self.connections.labels(relay_url).set(count)

    def reconnect(self, reason: str) -> None:
        """A connection slot dials again (`reason`: why the previous attempt ended)."""
        self.reconnects.labels(reason).inc()

    def backoff_scheduled(self, delay_s: float) -> None:
        """A connection slot waits `delay_s` (full-jitter backoff) before it dials again."""
        self.backoff.observe(delay_s)

    def query_started(self) -> None:
        self._in_flight += 1

    def query_finished(
        self, *, role: str | None, outcome: str, duration_s: float, rows: int, nbytes: int
    ) -> None:
        """A query ended. `outcome` is "ok" or its error code; refusals are counted from it."""
        self._in_flight = max(0, self._in_flight - 1)
        role_label = role or "none"
        counter = self._by_outcome.get((role_label, outcome))
        if counter is None:
            counter = self._by_outcome[role_label, outcome] = self.queries.labels(
                role_label, outcome
            )
        counter.inc()
        per_role = self._by_role.get(role_label)
        if per_role is None:
            per_role = self._by_role[role_label] = (
                self.duration.labels(role_label),
                self.rows.labels(role_label),
                self.result_bytes.labels(role_label),
            )
        duration, rows_total, bytes_total = per_role
        duration.observe(duration_s)
        if rows:
            rows_total.inc(rows)
        if nbytes:
            bytes_total.inc(nbytes)
        if outcome in REFUSALS:
            self.refusals.labels(outcome).inc()
        if outcome == "ok":
            self._last_db_ok = self._clock()

    def frame_sent(self, nbytes: int, frames: int = 1) -> None:
        counts = self._tally.counts
        counts[2] += frames
        counts[3] += nbytes

    def frame_received(self, nbytes: int, frames: int = 1) -> None:
        counts = self._tally.counts
        counts[0] += frames
        counts[1] += nbytes

    def backpressure_stall(self) -> None:
        self.stalls.inc()

    def session_opened(self) -> None:
        self.sessions_open.inc()

    def session_ended(self, reason: str) -> None:
        self.sessions_open.dec()
        self.sessions_ended.labels(reason).inc()

    def set_draining(self) -> None:
        """From now on /ready answers 503 (and systemd hears STOPPING=1)."""
        if not self._draining:
            self._draining = True
            self.draining.set(1)
            sdnotify.notify("STOPPING=1\nSTATUS=draining")

    # -- readiness -----------------------------------------------------------------------------

    @property
    def registered(self) -> int:
        return sum(self._relays.values())

    async def ready(self, check: ReadyCheck | None) -> ReadyState:
        """Decide readiness: not draining, >= 1 registered connection, the database answers."""
        relays = {url: n for url, n in self._relays.items() if n}

        def state(ready: bool, reason: str, database: str) -> ReadyState:
            return ReadyState(
                ready=ready,
                reason=reason,
                connections=self.registered,
                relays=relays,
                draining=self._draining,
                database=database,
                in_flight=self._in_flight,
            )

        if self._draining:
            return state(False, "draining", "not checked")
        if not self.registered:
            return state(False, "no relay connection is registered", "not checked")
        if self.logins_failing:
            failing = "; ".join(f"{k}: {v}" for k, v in sorted(self.logins_failing.items()))
            return state(False, "database login failing", failing)
        if check is None or self._clock() - self._last_db_ok < self.ready_cache_s:
            return state(True, "ok", "ok")
        try:
            with trio.fail_after(self.ready_timeout_s):
                await check()
        except trio.TooSlowError:
            detail = f"no answer within {self.ready_timeout_s} s"
            return state(False, "database does not answer", detail)
        except Exception as exc:  # any failure of the probe means "not ready", with its message
            # /ready is the operator's: the cause as the connector's log has it (host, login, ...)
            detail = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
            return state(False, "database does not answer", detail)
        self._last_db_ok = self._clock()
        return state(True, "ok", "ok")

    # -- the HTTP side -------------------------------------------------------------------------

    @asynccontextmanager
    async def serve(
        self, host: str, port: int, *, ready_check: ReadyCheck | None = None
    ) -> AsyncIterator[OpsServer]:
        """Serve /metrics, /healthz and /ready on host:port (port 0: a free one) in this block."""
        app = _OpsApp(self, ready_check)
        config = HypercornConfig()
        config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")  # our format, not its own handler
        config.include_server_header = False
        config.graceful_timeout = 0.5
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve, app, config)
            try:
                yield OpsServer(url=str(binds[0]))
            finally:
                nursery.cancel_scope.cancel()

    async def serve_forever(
        self,
        listen: str,
        *,
        ready_check: ReadyCheck | None = None,
        task_status: trio.TaskStatus[OpsServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """`serve` on ``listen`` ("host:port", IPv6 as "[::1]:9464") until cancelled;
        ``task_status.started(server)`` once listening (for ``nursery.start``)."""
        host, _, port = listen.rpartition(":")
        async with self.serve(host.strip("[]"), int(port), ready_check=ready_check) as server:
            log.info("ops server listening", extra={"url": server.url})
            task_status.started(server)
            await trio.sleep_forever()


@dataclass(frozen=True)
class OpsServer:
    url: str  # e.g. "http://127.0.0.1:9464"


Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _OpsApp:
    """Three GET routes over ASGI; everything else is 404/405."""

    def __init__(self, ops: Ops, ready_check: ReadyCheck | None) -> None:
        self.ops = ops
        self.ready_check = ready_check

    async def __call__(self, scope: Scope, receive: Any, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path not in ("/metrics", "/healthz", "/ready"):
            await _respond(send, 404, b"not found: try /metrics, /healthz or /ready\n")
        elif method not in ("GET", "HEAD"):
            await _respond(send, 405, b"GET only\n")
        elif path == "/metrics":
            body = generate_latest(self.ops.registry)
            await _respond(send, 200, body, CONTENT_TYPE_LATEST.encode())
        elif path == "/healthz":
            await _respond(send, 200, b'{"alive": true}\n', b"application/json")
        else:
            state = await self.ops.ready(self.ready_check)
            await _respond(send, 200 if state.ready else 503, state.body(), b"application/json")


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes = b"text/plain"
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- the database probe (shared with connector/diag.py) ---------------------------------------


def _select_one(conn: Any) -> None:
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchall()


async def probe_login(pool: Any) -> None:
    """Borrow a connection from a `connector.pool.LoginPool` (logging in if none is idle) and run
    ``SELECT 1``. Raises `connector.pool.DatabaseUnavailable` or a python-tds error on failure."""
    async with pool.borrow() as pc:
        await pool.call(pc, _select_one)


async def watch_logins(
    pools: Any,
    ops: Ops,
    *,
    interval_s: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Check every login of `connector.pool.Pools` now, then every ``interval_s`` (0: once), all
    logins at once: ``SELECT 1`` on a pooled connection, logging in if none is idle. A login
    that fails is logged at once (not at the first query that needs it), shown in systemd's
    STATUS and in ``/ready``, and logged again when it works again. A pool whose connections
    are all busy is not checked that round: its queries show it works. Started
    (``nursery.start``) once the first round is done."""
    failing: dict[str, str] = {}

    async def check(login: str) -> None:
        try:
            await probe_login(pools[login])
        except Exception as exc:  # any failure: reported with its cause, never raised
            failure = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
            if failing.get(login) != failure:
                log.error(
                    "database login %r failing: %s",
                    login,
                    failure,
                    # the step's own hint (ticket, token, SSPI, 18456) when the pool named one
                    extra={
                        "login": login,
                        "hint": getattr(exc, "hint", "") or "edgetds connector diag",
                    },
                )
            failing[login] = failure
            ops.login_checked(login, failure)
        else:
            if failing.pop(login, None) is not None:
                log.info("database login %r works again", login)
            ops.login_checked(login, None)

    while True:
        async with trio.open_nursery() as nursery:  # all logins at once: a round takes the
            for stats in pools.statistics():  # longest login, not their sum
                if stats.idle == 0 and stats.in_use > 0:
                    continue
                nursery.start_soon(check, stats.login)
        task_status.started()  # after the first round: start-up has checked every login
        task_status = trio.TASK_STATUS_IGNORED
        if interval_s <= 0:
            return
        await trio.sleep(interval_s)


def database_probe(pools: Any) -> ReadyCheck:
    """A `ReadyCheck` for the connector's `connector.pool.Pools`: SELECT 1 with its first login."""

    async def check() -> None:
        for stats in pools.statistics():
            await probe_login(pools[stats.login])
            return
        raise RuntimeError("no [logins.NAME] configured")

    return check
