"""python-tds connection pools, one per SQL Server login, driven from Trio worker threads.

Rules: a python-tds connection is not thread-safe, so a `PooledConnection` runs its calls on one
thread, its own worker thread (`WorkerThread`, started with the connection, ended by its close),
and only while a query task holds it (`LoginPool.borrow`). Every blocking call on it goes to that
thread (`LoginPool.call`): one thread per connection, so one busy login cannot starve another of
threads, and a call costs a queue put and a byte on the thread's socket pair that wakes the
waiting task straight from Trio's I/O wait (no thread naming, context copy or limiter of
`trio.to_thread.run_sync`: 25-40 us of CPU less per call here, and no detour through
``run_sync_soon``: one round of the run loop less). Opening and closing a connection go through
`trio.to_thread.run_sync` with the pool's CapacityLimiter. A query's first requests and their
small answers are the exception (connector/_tdsio.py): python-tds writes and parses them in
memory, in the Trio thread, and nothing of it blocks; the query task does that only between its
worker-thread calls, so the connection is still used by one thread at a time.

Cancelling a call that is blocked inside python-tds is the one cross-thread operation, and it
touches only the raw socket (`PooledConnection.interrupt`): on a plaintext connection it writes a
TDS ATTENTION packet (the server stops the statement and acknowledges), and if the worker has not
come back within a grace period it shuts the socket down. Either way the connection is marked
broken and discarded when returned, because its token stream is no longer in a known state.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pytds
import trio
from OpenSSL.SSL import Error as OpenSSLError
from pytds import tds_base

from connector._free import Free
from connector._thread import WorkerThread
from connector.config import DatabaseConfig, LoginConfig
from connector.logins import LoginStepError, TokenSource, connect_arguments, step_hint

__all__ = ["DatabaseUnavailable", "LoginPool", "PoolStats", "PooledConnection", "Pools"]

log = logging.getLogger("edgetds.connector.pool")

T = TypeVar("T")

#: TDS ATTENTION: packet type 6, status EOM, length 8 (header only).
_ATTENTION = bytes([6, 1, 0, 8, 0, 0, 1, 0])


class DatabaseUnavailable(Exception):
    """SQL Server could not be reached or refused the login (connector.database_unavailable).

    ``message`` (also ``str()``) may be shown to a client: the failure class and what to do.
    ``detail`` names the login, host, port and SQL Server's or the network's answer: it belongs
    in the connector's log only. ``step`` names what failed for a login (``ticket``, ``token``,
    ``SSPI``, ``18456``, or another SQL Server error number; "" for the network) and ``hint``
    what to check.
    """

    def __init__(self, message: str, *, detail: str, step: str = "", hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.step = step
        self.hint = hint


#: What a client is told; the cause (login, host, port, server text) is in the connector's log.
UNREACHABLE = "the connector cannot reach SQL Server; retry later"
LOGIN_REFUSED = (
    "SQL Server refused the connector's login for this query's role; retry later (the "
    "connector's operator can check it with `edgetds connector diag`)"
)


class PooledConnection:
    """One python-tds connection, its worker thread, and what is needed to interrupt it from
    another thread."""

    def __init__(self, conn: pytds.Connection, login: str) -> None:
        self.conn = conn
        self.login = login
        self.broken = False
        #: False until a query ran on it: a fresh connection needs no sp_reset_connection
        self.used = False
        self.created = time.monotonic()
        #: True while a worker thread is inside python-tds, or the Trio thread waits for an
        #: answer of SQL Server's (connector/_tdsio.py); read by the watchdog, in Trio (a plain
        #: attribute: a threading.Event's set and clear each take a lock)
        self._busy = False
        self.worker = WorkerThread(f"edgetds {login} connection")

    def _raw_socket(self) -> socket.socket | None:
        tds_socket = getattr(self.conn, "_tds_socket", None)
        sock = getattr(tds_socket, "sock", None)
        # TLS: python-tds wraps the TCP socket in tls.EncryptedSocket(._transport)
        return sock if isinstance(sock, socket.socket) else getattr(sock, "_transport", None)

    @property
    def encrypted(self) -> bool:
        tds_socket = getattr(self.conn, "_tds_socket", None)
        return not isinstance(getattr(tds_socket, "sock", None), socket.socket)

    @property
    def busy(self) -> bool:
        return self._busy

    @busy.setter
    def busy(self, value: bool) -> None:
        self._busy = value

    def run(self, fn: Callable[[pytds.Connection], T]) -> T:
        """Run fn(conn) in the CURRENT thread (call this from a worker thread)."""
        if self.broken:
            raise tds_base.InterfaceError("connection was interrupted and is being discarded")
        self._busy = True
        try:
            return fn(self.conn)
        except (OSError, tds_base.InterfaceError, tds_base.ClosedConnectionError):
            self.broken = True
            raise
        finally:
            self._busy = False

    def send_attention(self) -> bool:
        """Ask the server to stop the running statement (plaintext TCP only). Thread-safe.

        Returns True if the ATTENTION packet was written.
        """
        self.broken = True
        sock = self._raw_socket()
        if sock is None or self.encrypted:
            return False  # a TLS record cannot be written from a second thread safely
        try:
            sock.sendall(_ATTENTION)
        except OSError:
            return False
        return True

    def shutdown(self) -> None:
        """Cut the TCP connection so a blocked worker returns at once. Thread-safe."""
        self.broken = True
        sock = self._raw_socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        """Close the connection and end its worker thread (never while a call runs on it)."""
        self.worker.stop()
        try:
            self.conn.close()
        except Exception:  # closing a broken connection may raise anything; it is gone anyway
            log.debug("close failed", exc_info=True)


@dataclass(frozen=True)
class PoolStats:
    login: str
    idle: int
    in_use: int
    size: int
    opened: int
    discarded: int


class LoginPool:
    """Connections for one SQL Server login; at most `size` exist at once."""

    def __init__(self, db: DatabaseConfig, login: LoginConfig, *, query_timeout_s: float) -> None:
        self._db = db
        self._login = login
        self._idle: list[PooledConnection] = []
        #: taken without a schedule point when a slot is free (connector/_free.py)
        self._slots = Free(trio.Semaphore(login.pool_size))
        self.limiter = trio.CapacityLimiter(login.pool_size)
        self._query_timeout_s = query_timeout_s
        self._opened = 0
        self._discarded = 0
        self._in_use: set[PooledConnection] = set()
        #: auth = "entra": the access token, shared by the pool's connections until it expires
        self._tokens = TokenSource(login.entra) if login.entra is not None else None

    @property
    def name(self) -> str:
        return self._login.name

    def _connect(self) -> pytds.Connection:
        db = self._db
        return pytds.connect(
            dsn=db.host,
            port=db.port,
            database=db.database,
            **connect_arguments(self._login, db, self._tokens),
            autocommit=True,
            login_timeout=max(1, int(db.login_timeout_s)),
            # A safety net only: queries are timed and cancelled from the Trio side.
            timeout=self._query_timeout_s + 30,
            cafile=db.cafile or None,
            validate_host=db.validate_host,
            appname="edgetds-connector",
            disable_connect_retry=True,
        )

    async def _open(self) -> PooledConnection:
        try:
            conn = await trio.to_thread.run_sync(self._connect, limiter=self.limiter)
        except LoginStepError as exc:
            raise self._step_failed(exc) from None
        except tds_base.Error as exc:
            raise self._login_failed(exc) from None
        except (OSError, TimeoutError) as exc:
            # python-tds retries some refusals (a lone 4060, 40613) until login_timeout, then raises
            # TimeoutError from the server's answer: report that answer, not the timeout
            if isinstance(exc.__cause__, tds_base.Error):
                raise self._login_failed(exc.__cause__) from None
            raise DatabaseUnavailable(
                UNREACHABLE,
                detail=f"cannot reach SQL Server at {self._db.host}:{self._db.port}: "
                f"{exc.strerror or type(exc).__name__}",
            ) from None
        except OpenSSLError as exc:  # python-tds does TLS with pyOpenSSL
            raise DatabaseUnavailable(
                UNREACHABLE,
                detail=f"TLS with SQL Server at {self._db.host}:{self._db.port} failed: {exc}",
            ) from None
        self._opened += 1
        return PooledConnection(conn, self._login.name)

    def _describe(self) -> str:
        login = self._login
        auth = "" if login.auth == "sql" else f" (auth {login.auth})"
        return f"login {login.user!r}{auth} to {self._db.host}:{self._db.port} failed"

    def _step_failed(self, exc: LoginStepError) -> DatabaseUnavailable:
        """The ticket, token or SSPI step failed on the connector's side."""
        message = f"{self._describe()} at step {exc.step}: {exc.message}"
        hint = step_hint(exc.step)
        log.warning(
            "database login step failed",
            extra={"login": self._login.name, "step": exc.step, "error": message, "hint": hint},
        )
        return DatabaseUnavailable(LOGIN_REFUSED, detail=message, step=exc.step, hint=hint)

    def _login_failed(self, exc: tds_base.Error) -> DatabaseUnavailable:
        """SQL Server answered the login with an error: its number and message (the detail),
        also logged."""
        number = getattr(exc, "msg_no", None) or getattr(exc, "number", None)
        text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
        detail = f"SQL Server error {number}: {text}" if number else text
        # 18452: SQL Server refused a Windows login's SSPI exchange
        step = "SSPI" if number == 18452 else str(number or "")
        at = " at step SSPI" if step == "SSPI" else ""
        message = self._describe() + at + (f" ({detail})" if detail else "")
        hint = step_hint(step)
        log.warning(
            "SQL Server refused the login",
            extra={"login": self._login.name, "step": step, "error": message, "hint": hint},
        )
        return DatabaseUnavailable(LOGIN_REFUSED, detail=message, step=step, hint=hint)

    def redact(self, text: str) -> str:
        """SQL Server's ``text`` with this pool's login name and server host replaced: an error a
        client's own statement raised may name them (e.g. 916 names the login)."""
        for name, placeholder in ((self._login.user, "<login>"), (self._db.host, "<server>")):
            if name:
                text = re.sub(
                    rf"(?<![\w.-]){re.escape(name)}(?![\w-])", placeholder, text, flags=re.I
                )
        return text

    def borrow(self) -> _Borrow:
        """``async with pool.borrow() as pc``: hold one connection exclusively; broken ones are
        discarded on return."""
        return _Borrow(self)

    async def _take(self) -> PooledConnection:
        await self._slots.acquire()
        try:
            pc = self._idle.pop() if self._idle else await self._open()
        except BaseException:
            self._slots.release()
            raise
        self._in_use.add(pc)
        return pc

    async def _give_back(self, pc: PooledConnection) -> None:
        try:
            self._in_use.discard(pc)
            if pc.broken:
                self._discarded += 1
                # close in a thread: python-tds may block writing to a dead socket
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(pc.close, abandon_on_cancel=True)
            else:
                self._idle.append(pc)
        finally:
            self._slots.release()

    async def call(self, pc: PooledConnection, fn: Callable[[pytds.Connection], T]) -> T:
        """Run fn(conn) on a borrowed connection in its worker thread.

        Not cancellable from Trio (the thread is waited for): interrupt it with
        `PooledConnection.send_attention` / `shutdown` instead.
        """
        return await pc.worker.call(lambda: pc.run(fn))

    def statistics(self) -> PoolStats:
        return PoolStats(
            login=self._login.name,
            idle=len(self._idle),
            in_use=len(self._in_use),
            size=self._login.pool_size,
            opened=self._opened,
            discarded=self._discarded,
        )

    def discard_idle(self) -> None:
        """Forget every idle connection (they outlived an outage); closed in the background."""
        idle, self._idle = self._idle, []
        for pc in idle:
            self._discarded += 1
            pc.broken = True
            try:
                pc.close()  # no I/O worth waiting for: the socket is dead or about to be
            except Exception:  # pragma: no cover - close() already swallows errors
                pass

    def interrupt_all(self) -> None:
        """Cut every connection in use (process exit): blocked worker threads return at once."""
        for pc in list(self._in_use):
            pc.shutdown()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for pc in idle:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(pc.close, abandon_on_cancel=True)


class _Borrow:
    """`LoginPool.borrow`'s context manager (a class: an ``asynccontextmanager`` costs an async
    generator, its first-iteration hook and a weak reference per borrow)."""

    __slots__ = ("_pc", "_pool")

    def __init__(self, pool: LoginPool) -> None:
        self._pool = pool
        self._pc: PooledConnection | None = None

    async def __aenter__(self) -> PooledConnection:
        self._pc = await self._pool._take()
        return self._pc

    async def __aexit__(self, *exc_info: object) -> None:
        pc, self._pc = self._pc, None
        assert pc is not None
        await self._pool._give_back(pc)


class Pools:
    """All login pools of a connector, by login name."""

    def __init__(self, db: DatabaseConfig, *, query_timeout_s: float = 300.0) -> None:
        self.db = db
        self._pools = {
            name: LoginPool(db, login, query_timeout_s=query_timeout_s)
            for name, login in db.logins.items()
        }

    def __getitem__(self, login: str) -> LoginPool:
        try:
            return self._pools[login]
        except KeyError:
            raise KeyError(
                f"policy names login {login!r} but the connector config has no [logins.{login}]"
            ) from None

    def __contains__(self, login: object) -> bool:
        return login in self._pools

    def statistics(self) -> list[PoolStats]:
        return [p.statistics() for p in self._pools.values()]

    def interrupt_all(self) -> None:
        for pool in self._pools.values():
            pool.interrupt_all()

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
