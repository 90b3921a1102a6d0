"""Sessions: one transaction across several requests, held at the connector (SPEC.md 7.4).

The connector is authoritative for every session it holds. A session is:

1. Opened by a ``begin`` op: the role is fixed (the op's ``role`` or the first matching role that
   allows sessions), the caps are checked (``[sessions] max_per_identity`` and ``max_open``, the
   role's ``max_sessions``, and per login pool ``pool_size - reserve_connections``, so one-shot
   queries always keep connections), then a holder task borrows ONE pooled connection and keeps
   it for the session's life. On it: a reset (RESETCONNECTION) with the session context (the
   one-shot keys plus ``edgetds.session``), then ``SET TRANSACTION ISOLATION LEVEL`` and ``BEGIN
   TRANSACTION`` as a plain batch (inside sp_executesql a SET would end with the call).
2. Used by ``run`` / ``savepoint`` / ``rollback_to`` ops, one at a time (``session.busy``),
   each checked for the owner (issuer + subject, ``session.wrong_identity``) first. After a
   statement the transaction descriptor SQL Server reported (python-tds keeps it from ENVCHANGE)
   says whether the transaction still runs; after a failed statement ``XACT_STATE()`` says
   whether it is doomed. Ended or doomed: rolled back, ``rolled_back_by_server``.
3. Ended by ``commit`` (the only end that does not roll back), ``rollback``, the idle timeout or
   the lifetime (the holder's timers: trio time, so tests use a MockClock), the loss of the relay
   connection it was opened on (`SessionManager.connection_ended`), or a drain
   (`SessionManager.end_all`). The holder rolls back, restores the default isolation level and
   returns the connection to its pool (the next borrower's request carries RESETCONNECTION).

Ended ids are remembered (with the reason and the owner) for `REMEMBER_ENDED_S`; an op on one
gets ``session.ended``, on an id never held ``session.not_found``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytds
import trio
from pytds import tds_base

from connector._metrics import NO_METRICS, Metrics
from connector.config import SessionsConfig
from connector.encode import BoundParam
from connector.execute import (
    CONTEXT_KEYS,
    describe_sql_error,
    reset_connection_flag,
    run_statement,
    sql_error,
)
from connector.policy import Role
from connector.pool import DatabaseUnavailable, LoginPool, PooledConnection, Pools
from connector.results import CancelToken, QueryFailed
from protocol import ErrorCode, SessionEnd, SessionOp

__all__ = ["REMEMBER_ENDED_S", "SESSION_CONTEXT_KEY", "Session", "SessionManager"]

log = logging.getLogger("edgetds.connector.sessions")

#: how long an ended session id is remembered (then ``session.not_found``)
REMEMBER_ENDED_S = 600.0
#: most ended ids remembered; the oldest are forgotten first beyond it
MAX_REMEMBERED = 100_000
#: the SESSION_CONTEXT key that carries the session id
SESSION_CONTEXT_KEY = "edgetds.session"
#: how long a begin waits for a pooled connection (all taken by one-shot queries)
BORROW_WAIT_S = 5.0

Owner = tuple[str, str]  # (issuer, subject)


@dataclass(eq=False)
class Session:
    """One open session (its state is touched only from the Trio thread)."""

    id: str
    link: object
    owner: Owner
    role: Role
    pool: LoginPool
    isolation: str
    idle_timeout_s: float
    lifetime_at: float
    #: unix ms of ``lifetime_at``, for the begin's DONE record
    expires_at_ms: int
    idle_at: float = 0.0
    pc: PooledConnection | None = None
    busy: bool = True  # the begin runs first
    op_cancel: CancelToken | None = None
    reason: SessionEnd | None = None
    committed: bool = False
    #: the holder could not open a database connection
    unavailable: bool = False
    changed: trio.Event = field(default_factory=trio.Event)
    idle: trio.Event = field(default_factory=trio.Event)
    finished: trio.Event = field(default_factory=trio.Event)

    def state(self) -> dict[str, Any]:
        """The ``session`` member of a DONE/ERROR record."""
        if self.reason is None:
            return {"id": self.id, "state": "open"}
        return {"id": self.id, "state": "ended", "reason": self.reason.value}

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def end(self, reason: SessionEnd) -> None:
        """Ask the holder to end the session (the first reason wins)."""
        if self.reason is None:
            self.reason = reason
            if self.op_cancel is not None:
                self.op_cancel.cancel(f"session ended ({reason.value})")
            self.notify()


@dataclass(frozen=True)
class _Ended:
    owner: Owner
    reason: SessionEnd
    at: float


class SessionManager:
    """Every session of the connector, per relay connection; `run` holds their tasks."""

    def __init__(
        self,
        config: SessionsConfig,
        pools: Pools,
        *,
        audit_end: Callable[[Session, SessionEnd], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.pools = pools
        self.ops: Metrics = NO_METRICS
        self._audit_end = audit_end
        self._links: dict[object, dict[str, Session]] = {}
        self._ended: OrderedDict[str, _Ended] = OrderedDict()
        self._nursery: trio.Nursery | None = None
        self.draining = False
        self._changed = trio.Event()

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the sessions' tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def open_sessions(self) -> list[Session]:
        return [s for table in self._links.values() for s in table.values()]

    async def wait_changed(self) -> None:
        """Return at the next session begin or end."""
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def connection_ended(self, link: object) -> None:
        """The relay connection ``link`` is gone: every session on it ends (transport.lost)."""
        for session in list(self._links.get(link, {}).values()):
            session.end(SessionEnd.TRANSPORT_LOST)

    async def end_all(self, reason: SessionEnd) -> None:
        """End every open session (drain) and wait until each rolled back."""
        self.draining = True
        sessions = self.open_sessions()
        for session in sessions:
            session.end(reason)
        for session in sessions:
            await session.finished.wait()

    # -- lookup ---------------------------------------------------------------------------------

    def _forget_old(self) -> None:
        now = trio.current_time()
        while self._ended:
            sid, ended = next(iter(self._ended.items()))
            if now - ended.at < REMEMBER_ENDED_S and len(self._ended) <= MAX_REMEMBERED:
                return
            del self._ended[sid]

    def known(self, sid: str) -> bool:
        self._forget_old()
        return sid in self._ended or any(sid in table for table in self._links.values())

    def find(self, link: object, sid: str, owner: Owner, *, busy_ok: bool = False) -> Session:
        """The open session ``sid`` of ``link`` for an op of ``owner``.

        ``busy_ok``: a session running an op is returned too (a rollback preempts it).

        Raises:
            QueryFailed: session.not_found, session.wrong_identity, session.ended, session.busy
                (in that order).
        """
        self._forget_old()
        session = self._links.get(link, {}).get(sid)
        if session is None:
            ended = self._ended.get(sid)
            if ended is None:
                raise QueryFailed(
                    ErrorCode.SESSION_NOT_FOUND,
                    "no such session on this connection (never opened, or ended more than "
                    f"{int(REMEMBER_ENDED_S // 60)} minutes ago); open a new one",
                )
            _check_owner(ended.owner, owner)
            raise QueryFailed(
                ErrorCode.SESSION_ENDED,
                f"the session has ended ({ended.reason.value}); open a new one",
                session={"id": sid, "state": "ended", "reason": ended.reason.value},
            )
        _check_owner(session.owner, owner)
        if session.reason is not None:
            raise QueryFailed(
                ErrorCode.SESSION_ENDED,
                f"the session has ended ({session.reason.value}); open a new one",
                session=session.state(),
            )
        if session.busy and not busy_ok:
            raise QueryFailed(
                ErrorCode.SESSION_BUSY,
                "another operation of this session is still running; wait for it, then retry",
                session=session.state(),
            )
        return session

    # -- begin ----------------------------------------------------------------------------------

    def _refuse_caps(self, owner: Owner, role: Role, pool: LoginPool) -> None:
        cfg = self.config
        sessions = self.open_sessions()
        mine = sum(1 for s in sessions if s.owner == owner)
        if mine >= cfg.max_per_identity:
            raise QueryFailed(
                ErrorCode.LIMITS_TOO_MANY_SESSIONS,
                f"one identity may hold at most {cfg.max_per_identity} open sessions on this "
                "connector ([sessions] max_per_identity); commit or roll back one, then retry",
                limit="identity",
            )
        on_pool = sum(1 for s in sessions if s.pool is pool)
        pool_cap = pool.statistics().size - cfg.reserve_connections
        role_cap = role.max_sessions if role.max_sessions is not None else pool_cap
        checks = (
            (len(sessions), cfg.max_open, "the connector holds at most {} ([sessions] max_open)"),
            (
                sum(1 for s in sessions if s.role.name == role.name),
                role_cap,
                f"role {role.name!r} holds at most {{}} (max_sessions)",
            ),
            (
                on_pool,
                pool_cap,
                "its login's pool keeps connections for one-shot queries: at most {} "
                "([sessions] reserve_connections)",
            ),
        )
        for count, cap, what in checks:
            if count >= cap:
                raise QueryFailed(
                    ErrorCode.LIMITS_TOO_MANY_SESSIONS,
                    "too many open sessions: " + what.format(max(cap, 0)) + "; retry later",
                    limit="connector",
                )

    async def begin(
        self,
        link: object,
        spec: Mapping[str, Any],
        *,
        owner: Owner,
        role: Role,
        query_id: str,
        now_ms: int,
    ) -> Session:
        """Open session ``spec["id"]`` (the op's ``session`` member) for ``owner`` as ``role``.

        Raises:
            QueryFailed: request.invalid (an id already held), connector.draining,
                limits.too_many_sessions, connector.database_unavailable.
        """
        sid = spec["id"]
        if self.known(sid):
            raise QueryFailed(ErrorCode.REQUEST_INVALID, "this session id is already in use")
        if self.draining or self._nursery is None:
            raise QueryFailed(
                ErrorCode.CONNECTOR_DRAINING,
                "the connector is shutting down and opens no new sessions; retry (the relay "
                "uses another connector)",
            )
        pool = self.pools[role.login]
        self._refuse_caps(owner, role, pool)
        cfg = self.config
        idle_ms = min(cfg.idle_timeout_ms, spec.get("idle_timeout_ms") or cfg.idle_timeout_ms)
        now = trio.current_time()
        session = Session(
            id=sid,
            link=link,
            owner=owner,
            role=role,
            pool=pool,
            isolation=spec.get("isolation") or "read committed",
            idle_timeout_s=idle_ms / 1000,
            lifetime_at=now + cfg.max_lifetime_ms / 1000,
            expires_at_ms=now_ms + cfg.max_lifetime_ms,
        )
        self._links.setdefault(link, {})[sid] = session
        self.ops.session_opened()
        self._notify()
        with trio.move_on_after(BORROW_WAIT_S):
            await self._nursery.start(self._hold, session)
        if session.pc is None and session.unavailable:
            raise QueryFailed(
                ErrorCode.CONNECTOR_DATABASE_UNAVAILABLE,
                "the connector cannot reach SQL Server to open the session; retry later",
                session=session.state(),
            )
        if session.pc is None:
            session.end(SessionEnd.DATABASE_UNAVAILABLE)
            raise QueryFailed(
                ErrorCode.LIMITS_TOO_MANY_SESSIONS,
                f"no connection of the role's pool freed within {BORROW_WAIT_S:.0f} s; retry later",
                limit="connector",
                session=session.state(),
            )
        context = {
            CONTEXT_KEYS[0]: owner[1],
            CONTEXT_KEYS[1]: owner[0],
            CONTEXT_KEYS[2]: query_id,
            SESSION_CONTEXT_KEY: sid,
        }
        try:
            await self.call(session, lambda conn: _open_transaction(conn, session, context))
        except QueryFailed as exc:
            session.end(SessionEnd.DATABASE_UNAVAILABLE)
            exc.session = session.state()
            raise
        session.busy = False
        session.idle_at = trio.current_time() + session.idle_timeout_s
        session.notify()
        return session

    # -- ops ------------------------------------------------------------------------------------

    async def preempt(self, session: Session) -> None:
        """Cancel the op the session runs, if any, and wait until it stopped (a rollback that
        arrives while a statement runs: the client gave up on it)."""
        while session.busy and session.reason is None:
            if session.op_cancel is not None:
                session.op_cancel.cancel("rolled back")
            await session.changed.wait()  # set by every change: the op's end, begin's, the end

    def start_op(self, session: Session, cancel: CancelToken) -> None:
        session.busy = True
        session.op_cancel = cancel
        session.notify()

    def finish_op(self, session: Session) -> None:
        session.busy = False
        session.op_cancel = None
        session.idle_at = trio.current_time() + session.idle_timeout_s
        session.idle.set()
        session.idle = trio.Event()
        session.notify()

    async def call(self, session: Session, fn: Callable[[pytds.Connection], Any]) -> Any:
        """Run fn(conn) on the session's connection; SQL Server's errors become QueryFailed."""
        pc = session.pc
        assert pc is not None
        try:
            return await session.pool.call(pc, fn)
        except (OSError, TimeoutError, tds_base.ClosedConnectionError) as exc:
            pc.broken = True
            raise QueryFailed(
                ErrorCode.CONNECTOR_DATABASE_UNAVAILABLE,
                "the connection to SQL Server failed during the session; open a new one",
                detail=describe_sql_error(exc),
            ) from None
        except tds_base.Error as exc:
            raise sql_error(exc, redact=session.pool.redact) from None
        except DatabaseUnavailable as exc:
            raise QueryFailed(
                ErrorCode.CONNECTOR_DATABASE_UNAVAILABLE, exc.message, detail=exc.detail
            ) from None

    async def after_statement(self, session: Session, failed: QueryFailed | None) -> None:
        """End the session when the statement ended or doomed the transaction (or broke the
        connection); else it stays open."""
        pc = session.pc
        assert pc is not None
        if pc.broken:
            session.end(
                SessionEnd.DATABASE_UNAVAILABLE
                if failed is not None and failed.code == ErrorCode.CONNECTOR_DATABASE_UNAVAILABLE
                else SessionEnd.ROLLED_BACK_BY_SERVER
            )
            return
        if not _in_transaction(pc):
            session.end(SessionEnd.ROLLED_BACK_BY_SERVER)
            return
        if failed is None or failed.code != ErrorCode.SQL_ERROR:
            return
        try:
            state = await self.call(session, _xact_state)
        except QueryFailed:
            state = None
        if state != 1:
            session.end(SessionEnd.ROLLED_BACK_BY_SERVER)

    async def control(self, session: Session, op: SessionOp, name: str | None) -> None:
        """commit, rollback, savepoint or rollback_to on the session's transaction."""
        if op is SessionOp.COMMIT:
            try:
                await self.call(session, _batch("COMMIT TRANSACTION"))
            except QueryFailed as exc:
                session.end(SessionEnd.COMMIT_FAILED)
                exc.message = "COMMIT failed and the transaction was rolled back: " + exc.message
                raise
            session.committed = not _in_transaction(session.pc)
            session.end(
                SessionEnd.COMMITTED if session.committed else SessionEnd.ROLLED_BACK_BY_SERVER
            )
        elif op is SessionOp.ROLLBACK:
            session.end(SessionEnd.ROLLED_BACK)  # the holder rolls back
        elif op is SessionOp.SAVEPOINT:
            await self.call(session, _batch(f"SAVE TRANSACTION {name}"))
        else:
            await self.call(session, _batch(f"ROLLBACK TRANSACTION {name}"))

    async def wait_ended(self, session: Session) -> None:
        """Wait until the holder finished the session (rolled back, connection returned)."""
        await session.finished.wait()

    # -- the holder -----------------------------------------------------------------------------

    async def _hold(
        self, session: Session, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            async with session.pool.borrow() as pc:
                session.pc = pc
                task_status.started()
                try:
                    await self._watch(session)
                finally:
                    with trio.CancelScope(shield=True):
                        await self._close(session, pc)
        except DatabaseUnavailable as exc:
            log.warning("session could not get a connection: %s", exc.detail)
            session.unavailable = True
            session.end(SessionEnd.DATABASE_UNAVAILABLE)
            task_status.started()
        finally:
            reason = self._finish(session)
            # the end's audit record is written before anyone learns that the session ended
            with trio.CancelScope(shield=True):
                if self._audit_end is not None:
                    await self._audit_end(session, reason)
                session.finished.set()
                self._notify()

    async def _watch(self, session: Session) -> None:
        """Wait for the end: asked for, or the idle timeout, or the lifetime."""
        while session.reason is None:
            deadline = session.lifetime_at
            if not session.busy:
                deadline = min(deadline, session.idle_at)
            with trio.move_on_at(deadline):
                await session.changed.wait()
            now = trio.current_time()
            if now >= session.lifetime_at:
                session.end(SessionEnd.LIFETIME)
            elif not session.busy and now >= session.idle_at:
                session.end(SessionEnd.IDLE_TIMEOUT)
        while session.busy:  # the op was cancelled by end(); let it stop first
            await session.idle.wait()

    async def _close(self, session: Session, pc: PooledConnection) -> None:
        """Roll back (unless committed), restore the isolation level, give the connection back."""
        pc.used = True  # the next borrower's request resets it
        if pc.broken:
            # cut it: closing a connection whose last statement was interrupted must not wait
            # for SQL Server (the pool closes it on return; SQL Server rolls back on its end)
            pc.shutdown()
            return
        if session.committed:
            return
        restore = "" if session.isolation == "read committed" else _ISOLATION_DEFAULT
        try:
            await session.pool.call(pc, _batch(_ROLLBACK_IF_OPEN + restore))
        except Exception as exc:  # a connection we cannot clean is never reused
            log.info("session rollback failed: %s", describe_sql_error(exc))
            pc.broken = True
        if not pc.broken and _in_transaction(pc):
            pc.broken = True

    def _finish(self, session: Session) -> SessionEnd:
        reason = session.reason or SessionEnd.DATABASE_UNAVAILABLE
        session.reason = reason
        table = self._links.get(session.link, {})
        if table.get(session.id) is session:
            del table[session.id]
            if not table:
                self._links.pop(session.link, None)
            self.ops.session_ended(reason.value)
        self._ended[session.id] = _Ended(session.owner, reason, trio.current_time())
        self._forget_old()
        log.info("session ended", extra={"session": session.id, "reason": reason.value})
        return reason


def _check_owner(holder: Owner, owner: Owner) -> None:
    if holder != owner:
        raise QueryFailed(
            ErrorCode.SESSION_WRONG_IDENTITY,
            "this session belongs to another identity; use the token of the user who opened it",
        )


# ------------------------------------------------------------------------------ worker side

_ISOLATION_DEFAULT = ";SET TRANSACTION ISOLATION LEVEL READ COMMITTED"
_ROLLBACK_IF_OPEN = "IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION"


def _in_transaction(pc: PooledConnection | None) -> bool:
    """Whether SQL Server's last answer left a transaction open (its ENVCHANGE descriptor)."""
    tds = getattr(getattr(pc, "conn", None), "_tds_socket", None)
    return bool(getattr(tds, "tds72_transaction", 0))


def _batch(sql: str) -> Callable[[pytds.Connection], None]:
    def run(conn: pytds.Connection) -> None:
        cursor = conn.cursor()
        cursor.execute(sql)
        while cursor.nextset():
            pass

    return run


def _xact_state(conn: pytds.Connection) -> int | None:
    cursor = conn.cursor()
    cursor.execute("SELECT XACT_STATE()")
    row = cursor.fetchone()
    while cursor.nextset():
        pass
    return int(row[0]) if row else None


def _open_transaction(conn: pytds.Connection, session: Session, context: Mapping[str, str]) -> None:
    """Reset (a reused connection), session context, isolation level, BEGIN TRANSACTION."""
    assert session.pc is not None
    cursor = conn.cursor()
    keys = list(context)
    values = [BoundParam(f"@c{i}", "nvarchar(4000)", context[k]) for i, k in enumerate(keys)]
    batch = ";".join(
        f"EXEC sp_set_session_context @key = N'{key}', @value = @c{i}, @read_only = 1"
        for i, key in enumerate(keys)
    )
    if session.pc.used:
        with reset_connection_flag(cursor._session):
            run_statement(cursor, batch, values)
    else:
        run_statement(cursor, batch, values)
    while cursor.nextset():
        pass
    session.pc.used = True
    # a plain batch: SET inside sp_executesql would be undone when the call returns
    level = session.isolation.upper()
    cursor.execute(f"SET TRANSACTION ISOLATION LEVEL {level}; BEGIN TRANSACTION")
    while cursor.nextset():
        pass
