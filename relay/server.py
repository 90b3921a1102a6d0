"""Run the relay: `asgiapp.server` (HTTP/1.1 + WebSocket on llhttp and wsproto, trio) serving
`RelayApp` on one port, with a graceful drain.

`serve_relay(config)` is the long-running entry point (the CLI's); `open_relay(config)` is the
`async with` form tests and the demo use. Both report the bound URL (port 0 picks a free one).

Shutdown: every connector connection gets DRAIN (no new queries, reconnect elsewhere), in-flight
queries get up to `grace_s` to finish, then the server stops (it closes idle connections and gives
requests still in progress its own 1 s grace).

The server runs each request in its connection's task (no task, channel or lock per request) and
writes a response's head with its first body message: a small answer is one write. Latency note:
the listening socket and every accepted one have TCP_NODELAY, so small responses are not held back
by Nagle + delayed ACK (bench/relay_latency.py measures a sequence of small queries).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from asgiapp.server import ServerConfig, serve
from protocol import HEADER_SIZE, Limits
from relay.app import RelayApp
from relay.config import RelayConfig
from relay.logs import log_event, query_summary

__all__ = ["RunningRelay", "open_relay", "serve_relay"]


@dataclass(frozen=True)
class RunningRelay:
    """A relay that is serving: its app (registry, counters) and its URLs."""

    app: RelayApp
    http_url: str
    ws_url: str


def server_config(config: RelayConfig, limits: Limits) -> ServerConfig:
    host, port = config.host_port
    return ServerConfig(
        host=host,
        port=port,
        certfile=config.tls_cert_file or None,
        keyfile=config.tls_key_file or None,
        # Room for a 16 KiB bearer token in the headers, with the rest of a head beside it.
        max_head_bytes=64 * 1024,
        # A message holds whole frames; the connector cannot send more than the connection window.
        websocket_max_message_size=max(
            16 * 1024 * 1024, limits.connection_window + 2 * (limits.max_frame + HEADER_SIZE)
        ),
        graceful_timeout_s=1.0,
        # Bursts of hundreds of clients connecting at once (queries wait for admission, not for
        # accept()); the kernel caps it at net.core.somaxconn.
        backlog=1024,
    )


async def _drain(app: RelayApp, grace_s: float) -> None:
    await app.drain_all("relay shutting down")
    with trio.move_on_after(grace_s):
        # A poll, not an Event: shutdown happens once and streams end in many places.
        while any(s.in_flight for s in app.registry.sessions()):  # noqa: ASYNC110
            await trio.sleep(0.05)


async def serve_relay(
    config: RelayConfig,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    grace_s: float = 30.0,
    protocol_limits: Limits | None = None,
    summary_interval_s: float = 0.0,
    task_status: trio.TaskStatus[RunningRelay] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `shutdown_trigger` returns (or forever), then drain and stop; with
    `summary_interval_s` > 0, log the queries' summary (`queries.summary`) at that interval.

    Raises:
        ConfigError: the client-token issuers are unusable.
        OSError: the listen address cannot be bound.
    """
    limits = protocol_limits or Limits()
    async with config.make_verifier() as verifier:
        app = RelayApp(config, verifier, protocol_limits=limits)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                functools.partial(
                    serve, app, server_config(config, limits), shutdown_trigger=stop.wait
                )
            )
            http_url = str(binds[0])
            ws_url = "ws" + http_url.removeprefix("http")
            log_event("relay.listening", url=http_url, relay_key_id=app.relay_key_id)
            summary = trio.CancelScope()

            async def summarise() -> None:
                with summary:
                    await query_summary.run(summary_interval_s)

            nursery.start_soon(summarise)
            task_status.started(RunningRelay(app=app, http_url=http_url, ws_url=ws_url))
            if shutdown_trigger is None:
                await trio.sleep_forever()
            await shutdown_trigger()
            log_event("relay.shutdown", in_flight=sum(s.in_flight for s in app.registry.sessions()))
            await _drain(app, grace_s)
            summary.cancel()
            stop.set()


@asynccontextmanager
async def open_relay(
    config: RelayConfig, *, protocol_limits: Limits | None = None
) -> AsyncIterator[RunningRelay]:
    """Run the relay in this process until the block exits (then stop at once, no drain)."""
    async with trio.open_nursery() as nursery:
        running: RunningRelay = await nursery.start(
            functools.partial(serve_relay, config, protocol_limits=protocol_limits)
        )
        try:
            yield running
        finally:
            nursery.cancel_scope.cancel()
