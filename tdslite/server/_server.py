"""Listening: accept TCP connections (TCP_NODELAY), one task per connection, and the in-process
starter other tests use.

    async with tdslite.server.open_server(db=":memory:", users=..., seed="sample") as server:
        pytds.connect(server.host, port=server.port, ...)
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from tdslite.engine import Engine, User, load_users

from ._connection import Connection, ServerContext
from ._fedauth import FedAuthConfig
from ._sspi import SspiConfig
from ._statementlog import StatementLog

log = logging.getLogger("tdslite.server")

#: Worker threads running statements at once, across all connections.
DEFAULT_THREADS = 32


def make_ssl_context(cert: str | os.PathLike[str], key: str | os.PathLike[str]) -> ssl.SSLContext:
    """A server context for TLS inside PRELOGIN, capped at TLS 1.2 (FreeTDS hangs with 1.3)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(os.fspath(cert), os.fspath(key))
    return ctx


@dataclass
class TdsServer:
    """A running tdslite server.

    Attributes:
        host: the address it listens on.
        port: the TCP port (the real one when 0 was asked for).
        engine: the SQL engine behind it.
        statement_log: every statement run, with its outcome (see `StatementLog`).
    """

    host: str
    port: int
    engine: Engine
    statement_log: StatementLog
    users: dict[str, User] = field(default_factory=dict)
    _cancel: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        """Stop accepting and drop every connection."""
        self._cancel.cancel()


async def _handle(ctx: ServerContext, stream: trio.SocketStream) -> None:
    try:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    try:
        await Connection(ctx, stream).run()
    except Exception:  # a bug in one connection must not stop the server
        log.exception("tdslite connection failed")


@asynccontextmanager
async def open_server(
    *,
    db: str | os.PathLike[str] = ":memory:",
    users: str | os.PathLike[str] | Mapping[str, User],
    host: str = "127.0.0.1",
    port: int = 0,
    seed: str | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    fedauth: FedAuthConfig | None = None,
    sspi: SspiConfig | None = None,
    statement_log: StatementLog | str | os.PathLike[str] | None = None,
    threads: int = DEFAULT_THREADS,
    engine: Engine | None = None,
) -> AsyncIterator[TdsServer]:
    """Run a tdslite server in the current trio run for the duration of the ``async with``.

    Args:
        db: SQLite database file, or ":memory:".
        users: a users TOML file, or a mapping login -> `User` (see tdslite/README.md).
        host: address to listen on (loopback by default).
        port: TCP port; 0 picks a free one (read it back from ``server.port``).
        seed: "sample" creates the demo schema and rows when the database is empty.
        tls_cert: PEM certificate (chain) for TLS; needs ``tls_key``. Or pass ``ssl_context``.
        tls_key: PEM private key.
        ssl_context: a ready server context (overrides tls_cert/tls_key).
        fedauth: accept FEDAUTH access tokens verified this way.
        sspi: accept integrated (NTLM/Kerberos) logins of the users file's Windows logins.
        statement_log: a `StatementLog`, or a JSON-lines file path; an in-memory log by default.
        threads: worker threads running statements at once.
        engine: an existing engine to serve (then ``db``/``seed`` are ignored and the engine is
            left open afterwards); by default one is made from ``db``, ``users`` and ``seed``.

    Yields:
        The running `TdsServer` (host, port, engine, statement_log).
    """
    user_map = dict(users) if isinstance(users, Mapping) else load_users(users)
    if ssl_context is None and tls_cert is not None:
        if tls_key is None:
            raise ValueError("tls_cert needs tls_key (the certificate's private key)")
        ssl_context = make_ssl_context(tls_cert, tls_key)
    if isinstance(statement_log, StatementLog):
        slog = statement_log
    else:
        slog = StatementLog(statement_log)
    own_engine = engine is None
    if engine is None:
        engine = Engine(db, user_map, seed=seed)
    ctx = ServerContext(
        engine=engine,
        users=user_map,
        limiter=trio.CapacityLimiter(threads),
        ssl_context=ssl_context,
        fedauth=fedauth,
        sspi=sspi,
        statement_log=slog,
    )
    listeners = await trio.open_tcp_listeners(port, host=host)
    sockname = listeners[0].socket.getsockname()
    server = TdsServer(
        host=sockname[0], port=sockname[1], engine=engine, statement_log=slog, users=user_map
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve, listeners, ctx, server._cancel)
            try:
                yield server
            finally:
                server._cancel.cancel()
    finally:
        if own_engine:
            engine.close()
        if not isinstance(statement_log, StatementLog):
            slog.close()


async def _serve(
    listeners: list[trio.SocketListener], ctx: ServerContext, scope: trio.CancelScope
) -> None:
    with scope:
        await trio.serve_listeners(lambda s: _handle(ctx, s), listeners)  # type: ignore[arg-type]
