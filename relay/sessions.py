"""Sessions over HTTP (SPEC.md 11.5, 11.6): `/v1/tunnels/{t}/sessions...` and `/transaction`.

The relay makes the session id at ``begin`` and keeps ``id -> (tunnel, connection, owner,
state)`` (`SessionTable`); every later operation goes to that same connection as a QUERY with a
``session`` member, and the connector is authoritative for the transaction. Before anything is
sent an operation is checked in SPEC order: the tunnel (an id of another tunnel is
``session.not_found``), the token (already verified by relay/app.py) and the owner
(``session.wrong_identity``), that the session is open (``session.ended`` with the reason: the
connector's, ``transport.lost`` when the connection went away, ``connector.draining`` when it
drains) and not busy (``session.busy``). ``begin`` takes an admission slot like a query; the
other operations never wait in the admission queue. Ended sessions are forgotten after
`REMEMBER_ENDED_S`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio

from protocol import (
    ISOLATION_LEVELS,
    SESSION_CAP,
    ErrorCode,
    LocalProtocolError,
    check_session,
    error_record,
    events,
    http_status,
    loads_object,
    ndjson_line,
    new_session_id,
)
from relay.http import NDJSON_TYPE, HttpError, Receive, Scope, Send, receive_until, send_json
from relay.query import (
    _Exchange,
    _send_admitted,
    _watch_disconnect,
    read_body_in_time,
    sign_query,
)
from relay.request import QueryRequest, check_query_object, well_formed
from relay.session import ConnectorSession, RelayStream

if TYPE_CHECKING:
    from identity.oidc import Identity
    from relay.config import Limits
    from relay.limits import RefusalCounters
    from relay.registry import TunnelState

__all__ = [
    "REMEMBER_ENDED_S",
    "SessionRequest",
    "SessionTable",
    "handle_session",
    "handle_transaction",
]

#: How long an ended session is remembered (then session.not_found).
REMEMBER_ENDED_S = 600.0
#: The path operations after /sessions/{id}/ (DELETE /sessions/{id} is "rollback" too).
OPS = frozenset({"query", "commit", "rollback", "savepoint", "rollback_to"})
MAX_STATEMENTS = 100

Owner = tuple[str, str]


@dataclass(eq=False)
class RelaySession:
    id: str
    tunnel: str
    conn: ConnectorSession
    owner: Owner
    reason: str | None = None
    busy: bool = False
    ended_at: float = 0.0

    def state(self) -> dict[str, Any]:
        if self.reason is None:
            return {"id": self.id, "state": "open"}
        return {"id": self.id, "state": "ended", "reason": self.reason}


class SessionTable:
    """Every session this relay made: open ones and those ended in the last 10 minutes."""

    def __init__(self) -> None:
        self._sessions: OrderedDict[str, RelaySession] = OrderedDict()

    def _forget_old(self) -> None:
        now = trio.current_time()
        for sid, session in list(self._sessions.items()):
            if session.reason is not None and now - session.ended_at >= REMEMBER_ENDED_S:
                del self._sessions[sid]

    def end(self, session: RelaySession, reason: str) -> None:
        if session.reason is None:
            session.reason = reason
            session.ended_at = trio.current_time()

    def _refresh(self, session: RelaySession) -> None:
        """A session whose connection is gone or draining has ended (the connector rolls back)."""
        if session.reason is None and session.conn.closed:
            self.end(session, ErrorCode.TRANSPORT_LOST.value)
        elif session.reason is None and (session.conn.draining or session.conn.conn.peer_draining):
            self.end(session, ErrorCode.CONNECTOR_DRAINING.value)

    def open_count(self, tunnel: str, owner: Owner | None = None) -> int:
        count = 0
        for session in self._sessions.values():
            self._refresh(session)
            if session.reason is None and session.tunnel == tunnel:
                count += owner is None or session.owner == owner
        return count

    def add(self, session: RelaySession) -> None:
        self._forget_old()
        self._sessions[session.id] = session

    def discard(self, session: RelaySession) -> None:
        self._sessions.pop(session.id, None)

    def lookup(self, tunnel: str, sid: str, owner: Owner) -> RelaySession:
        """The open session for an operation, checked in SPEC order (else HttpError)."""
        self._forget_old()
        session = self._sessions.get(sid)
        if session is None or session.tunnel != tunnel:
            raise HttpError(
                ErrorCode.SESSION_NOT_FOUND,
                "no such session on this tunnel (never opened, or ended more than 10 minutes "
                "ago); open a new one with POST /v1/tunnels/{tunnel}/sessions",
            )
        if session.owner != owner:
            raise HttpError(
                ErrorCode.SESSION_WRONG_IDENTITY,
                "this session belongs to another identity; use the token of the user who opened it",
            )
        self._refresh(session)
        if session.reason is not None:
            raise HttpError(
                ErrorCode.SESSION_ENDED,
                f"the session has ended ({session.reason}); open a new one",
                session=session.state(),
            )
        if session.busy:
            raise HttpError(
                ErrorCode.SESSION_BUSY,
                "another operation of this session is still running; wait for it, then retry",
                session=session.state(),
            )
        return session

    def statistics(self) -> dict[str, int]:
        open_ = sum(1 for s in self._sessions.values() if s.reason is None)
        return {"open": open_, "remembered": len(self._sessions) - open_}


# ---------------------------------------------------------------------------------- requests


#: a begin's role: 1-128 characters, none of them a control character (the Worker's rule)
_ROLE = re.compile(r"[^\x00-\x1f]{1,128}")


async def _read_object(scope: Scope, receive: Receive, limits: Limits) -> dict[str, Any]:
    return parse_object(await read_body_in_time(scope, receive, limits))


def parse_object(body: bytes) -> dict[str, Any]:
    """A session request's body: {} when empty (white space alone is no JSON, as the Worker
    reads it), else a JSON object read as strictly as a frame payload."""
    if not body:
        return {}
    try:
        return loads_object(body)
    except ValueError:
        raise HttpError(ErrorCode.REQUEST_INVALID, "the body must be a JSON object") from None


def _begin_member(body: Mapping[str, Any], sid: str, allowed: frozenset[str]) -> dict[str, Any]:
    """The ``begin`` op's ``session`` member from a request body (SPEC.md 11.5)."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise HttpError(
            ErrorCode.REQUEST_INVALID,
            f"unknown member {unknown[0][:40]!r}; allowed: {', '.join(sorted(allowed))}",
        )
    member: dict[str, Any] = {"id": sid, "op": "begin"}
    isolation = body.get("isolation")
    if isolation is not None:
        if isolation not in ISOLATION_LEVELS:
            raise HttpError(
                ErrorCode.REQUEST_INVALID,
                "'isolation' must be one of " + ", ".join(ISOLATION_LEVELS),
            )
        member["isolation"] = isolation
    timeout = body.get("timeout_ms")
    if timeout is not None:
        if type(timeout) is not int or not 1 <= timeout <= 2**31 - 1:
            raise HttpError(ErrorCode.REQUEST_INVALID, "'timeout_ms' must be 1..2^31-1")
        member["idle_timeout_ms"] = timeout
    role = body.get("role")
    if role is not None:
        if not isinstance(role, str) or not _ROLE.fullmatch(role) or not well_formed(role):
            raise HttpError(
                ErrorCode.REQUEST_INVALID,
                "'role' must be a policy role name (1-128 characters, no control character)",
            )
        # 128 counted as the Worker counts them: UTF-16 code units
        if len(role.encode("utf-16-le", "surrogatepass")) > 256:
            raise HttpError(ErrorCode.REQUEST_INVALID, "'role' must be at most 128 characters")
        member["role"] = role
    return member


def _open(
    conn: ConnectorSession,
    *,
    token: str,
    member: Mapping[str, Any],
    timeout_ms: int,
    req: QueryRequest | None = None,
) -> RelayStream:
    """Send one attested session QUERY: ``req``'s statement (a ``run``), or none (begin,
    commit, ...)."""
    signed = sign_query(conn, token, req, member, timeout_ms=timeout_ms)
    try:
        return conn.open_stream(signed.frame)
    except LocalProtocolError:
        raise HttpError(
            ErrorCode.CONNECTOR_DRAINING,
            "the connection of this session takes no more operations; open a new session",
        ) from None


def _check_member(member: Mapping[str, Any]) -> None:
    """The member's framing rules, before it is sent (a savepoint name the connector would
    refuse at framing must not cost the connection)."""
    try:
        check_session(member, has_statement=False)
    except ValueError as exc:
        raise HttpError(ErrorCode.REQUEST_INVALID, str(exc)) from None


async def _terminal(stream: RelayStream, timeout_s: float) -> bytes:
    """The stream's terminal record (results, which these ops do not have, are dropped)."""
    try:
        with trio.move_on_after(timeout_s):
            while True:
                event = await stream.receive.receive()
                if isinstance(event, events.Done | events.Error):
                    return event.data
                if isinstance(event, events.Columns | events.Rows):
                    stream.consumed(len(event.data))
        return error_record(
            ErrorCode.QUERY_TIMEOUT, f"no answer from the connector within {timeout_s:g} s"
        )
    finally:
        stream.release("done")


def _record(data: bytes) -> tuple[str, dict[str, Any]]:
    """("done" or "error", its object) of a terminal line."""
    obj = json.loads(data)
    kind = "done" if "done" in obj else "error"
    return kind, obj[kind]


def _learn(table: SessionTable, session: RelaySession, body: Mapping[str, Any]) -> None:
    """Take the session state the connector reported (or a lost transport) into the table."""
    state = body.get("session")
    if isinstance(state, dict) and state.get("state") == "ended":
        table.end(session, str(state.get("reason") or "ended"))
    elif body.get("code") == ErrorCode.TRANSPORT_LOST:
        table.end(session, ErrorCode.TRANSPORT_LOST.value)


def _rfc3339(unix_ms: int) -> str:
    moment = datetime.fromtimestamp(unix_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


async def _error(send: Send, record: bytes, *, status: int | None = None) -> None:
    _, err = _record(record)
    code = str(err.get("code", ErrorCode.INTERNAL))
    headers = [(b"retry-after", b"1")] if http_status(code) == 429 else []
    await send_json(send, status or http_status(code), record, extra_headers=headers)


@dataclass
class SessionRequest:
    """What relay/app.py hands a session request: the table, the tunnel, the verified caller."""

    table: SessionTable
    tunnel: TunnelState
    identity: Identity
    token: str
    limits: Limits
    counters: RefusalCounters
    started: float

    @property
    def owner(self) -> Owner:
        return (self.identity.issuer, self.identity.subject)


async def _begin(
    ctx: SessionRequest, member: dict[str, Any], receive: Receive
) -> tuple[RelaySession, dict[str, Any]]:
    """Open a session (admission slot, pinned connection); (session, the DONE's session)."""
    limits, tunnel = ctx.limits, ctx.tunnel
    for count, cap, whose in (
        (
            ctx.table.open_count(tunnel.name, ctx.owner),
            limits.max_sessions_per_identity,
            "identity",
        ),
        (ctx.table.open_count(tunnel.name), limits.max_sessions_per_tunnel, "tunnel"),
    ):
        if count >= cap:
            raise HttpError(
                ErrorCode.LIMITS_TOO_MANY_SESSIONS,
                f"too many open sessions ({whose} limit {cap}); commit or roll back one, then "
                "retry",
                limit=whose,
                retry_after="1",
            )
    key = f"{ctx.identity.issuer}\n{ctx.identity.subject}"

    async def client_gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async with tunnel.slot(
        key, wait_s=limits.admission_wait_ms / 1000, client_gone=client_gone
    ) as slot:
        conn = tunnel.pick()
        if SESSION_CAP not in conn.conn.caps:
            raise HttpError(
                ErrorCode.TUNNEL_NO_CONNECTOR,
                "the tunnel's connector is too old for sessions (it did not announce the "
                "'session' capability); upgrade the connector",
            )
        member["id"] = member.get("id") or new_session_id()
        _check_member(member)
        session = RelaySession(member["id"], tunnel.name, conn, ctx.owner, busy=True)
        ctx.table.add(session)
        stream = _open(conn, token=ctx.token, member=member, timeout_ms=limits.query_timeout_ms)
        tunnel.placed(slot)
        record = await _terminal(stream, limits.query_timeout_ms / 1000 + 5)
    session.busy = False
    kind, body = _record(record)
    if kind == "error":
        ctx.table.discard(session)
        body["session"] = body.get("session") or None
        raise _Relayed(record)
    return session, body.get("session") or {}


class _Relayed(Exception):
    """The connector's ERROR record, answered as it is."""

    def __init__(self, record: bytes) -> None:
        super().__init__("relayed")
        self.record = record


async def handle_session(
    scope: Scope, receive: Receive, send: Send, ctx: SessionRequest, *, sid: str | None, op: str
) -> None:
    """One session request (SPEC.md 11.5): ``op`` is ``begin`` (sid None) or one of `OPS`."""
    try:
        await _handle_session(ctx, scope, receive, send, sid, op)
    except _Relayed as relayed:
        await _error(send, relayed.record)


async def _handle_session(
    ctx: SessionRequest, scope: Scope, receive: Receive, send: Send, sid: str | None, op: str
) -> None:
    if sid is None:
        body = await _read_object(scope, receive, ctx.limits)
        begin = _begin_member(body, "", frozenset({"isolation", "timeout_ms", "role"}))
        begin["id"] = new_session_id()
        session, state = await _begin(ctx, begin, receive)
        answer = {
            "session": session.id,
            "expires_at": _rfc3339(int(state.get("expires_at") or 0)),
            "idle_timeout_ms": state.get("idle_timeout_ms"),
        }
        ctx.counters.count("queries")
        await send_json(send, 201, ndjson_line(answer))
        return
    session = ctx.table.lookup(ctx.tunnel.name, sid, ctx.owner)
    session.busy = True
    try:
        if op == "query":
            req = check_query_object(
                await _read_object(scope, receive, ctx.limits),
                max_timeout_ms=ctx.limits.query_timeout_ms,
                max_param_bytes=ctx.limits.max_param_bytes,
            )
            # The session learns its state and stops being busy when the terminal record
            # arrives, before it is written: the client may send its next op the moment it has it.
            exchange = _Exchange(on_terminal=lambda record: _settle(ctx.table, session, record))
            await _send_admitted(ctx.tunnel, None, receive, send, req, ctx.identity, ctx.token,
                                 ctx.started, ctx.limits, ctx.counters, first=True,
                                 connection=session.conn, exchange=exchange,
                                 session_member={"id": session.id, "op": "run"},
                                 until=receive_until(receive, scope))  # fmt: skip
            # no terminal record: the client went away (the stream was CANCELled) and the
            # connector's verdict comes with the next op; a lost connection shows in `_refresh`
            return
        body = await _read_object(scope, receive, ctx.limits)
        member: dict[str, Any] = {"id": session.id, "op": op}
        if op in ("savepoint", "rollback_to"):
            name = body.get("name")
            if set(body) - {"name"} or not isinstance(name, str):
                raise HttpError(ErrorCode.REQUEST_INVALID, 'send {"name": "<savepoint name>"}')
            member["name"] = name
        elif body:
            raise HttpError(ErrorCode.REQUEST_INVALID, f"{op} takes no body members")
        record = await _control(ctx, session, member)
    finally:
        session.busy = False
    kind, obj = _record(record)
    if kind == "error":
        raise _Relayed(record)
    answer = {"session": session.id, **{k: v for k, v in session.state().items() if k != "id"}}
    await send_json(send, 200, ndjson_line(answer))


def _settle(table: SessionTable, session: RelaySession, record: bytes) -> None:
    """A session op's terminal record arrived: learn the state it carries; not busy any more."""
    _learn(table, session, _record(record)[1])
    session.busy = False


async def _control(ctx: SessionRequest, session: RelaySession, member: Mapping[str, Any]) -> bytes:
    """A statement-less op on the session's connection; its terminal record (state learnt)."""
    _check_member(member)
    try:
        stream = _open(session.conn, token=ctx.token, member=member,
                       timeout_ms=ctx.limits.query_timeout_ms)  # fmt: skip
    except HttpError:
        ctx.table.end(session, ErrorCode.CONNECTOR_DRAINING.value)
        raise
    record = await _terminal(stream, ctx.limits.query_timeout_ms / 1000 + 5)
    _learn(ctx.table, session, _record(record)[1])
    return record


async def handle_transaction(
    scope: Scope, receive: Receive, send: Send, ctx: SessionRequest
) -> None:
    """``POST /v1/tunnels/{t}/transaction`` (SPEC.md 11.6): begin, each statement, commit."""
    limits = ctx.limits
    body = await _read_object(scope, receive, limits)
    statements = body.pop("statements", None)
    if not isinstance(statements, list) or not 1 <= len(statements) <= MAX_STATEMENTS:
        raise HttpError(
            ErrorCode.REQUEST_INVALID,
            f"'statements' must be a list of 1..{MAX_STATEMENTS} {{sql|query, params}} objects",
        )
    requests: list[QueryRequest] = []
    for item in statements:
        if not isinstance(item, dict) or set(item) - {"sql", "query", "params"}:
            raise HttpError(
                ErrorCode.REQUEST_INVALID, 'each statement is {"sql"|"query", "params"}'
            )
        with_timeout = dict(item)
        if "timeout_ms" in body:
            with_timeout["timeout_ms"] = body["timeout_ms"]
        requests.append(
            check_query_object(
                with_timeout,
                max_timeout_ms=limits.query_timeout_ms,
                max_param_bytes=limits.max_param_bytes,
            )
        )
    member = _begin_member(body, "", frozenset({"isolation", "timeout_ms", "role"}))
    member.pop("idle_timeout_ms", None)
    member["id"] = new_session_id()
    try:
        session, _state = await _begin(ctx, member, receive)
    except _Relayed as relayed:
        await _error(send, relayed.record)
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", NDJSON_TYPE), (b"cache-control", b"no-store")],
        }
    )
    exchange = _Exchange()
    try:
        async with trio.open_nursery() as nursery:
            # A client that hangs up before the answer ends cancels the transaction: the
            # running statement stops and everything is rolled back (the Worker does the same).
            nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope, exchange)
            await _run_transaction(ctx, session, requests, send, exchange)
            nursery.cancel_scope.cancel()
    finally:
        if session.reason is None:  # the client went away, or a failure: nothing may stay
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await _control(ctx, session, {"id": session.id, "op": "rollback"})


async def _run_transaction(
    ctx: SessionRequest,
    session: RelaySession,
    requests: list[QueryRequest],
    send: Send,
    exchange: _Exchange,
) -> None:
    total = 0
    query_id = str(uuid.uuid4())
    for index, req in enumerate(requests):
        failed, rows = await _statement(ctx, session, req, index, send)
        if failed is not None:
            if session.reason is None:
                await _control(ctx, session, {"id": session.id, "op": "rollback"})
            failed["statement"] = index
            failed["session"] = session.state()
            await _last(send, {"error": failed}, exchange)
            return
        total += rows
    with trio.CancelScope(shield=True):  # once COMMIT is sent, its answer is awaited
        record = await _control(ctx, session, {"id": session.id, "op": "commit"})
    kind, obj = _record(record)
    elapsed = round((trio.current_time() - ctx.started) * 1000, 1)
    if kind == "error":
        obj["statement"] = None
        obj["session"] = session.state()
        await _last(send, {"error": obj}, exchange)
        return
    done: dict[str, Any] = {"statements": len(requests), "rows": total, "elapsed_ms": elapsed}
    done |= {"query_id": query_id, "session": session.state()}
    await _last(send, {"done": done}, exchange)


async def _last(send: Send, record: Mapping[str, Any], exchange: _Exchange) -> None:
    exchange.answered = True  # a disconnect from now on is the end of a complete answer
    await send({"type": "http.response.body", "body": ndjson_line(record), "more_body": False})


async def _statement(
    ctx: SessionRequest, session: RelaySession, req: QueryRequest, index: int, send: Send
) -> tuple[dict[str, Any] | None, int]:
    """Run one statement of a /transaction; stream its results; (error object or None, rows)."""
    member = {"id": session.id, "op": "run"}
    try:
        stream = _open(session.conn, token=ctx.token, member=member, timeout_ms=0, req=req)
    except HttpError:
        ctx.table.end(session, ErrorCode.TRANSPORT_LOST.value)
        return {"code": ErrorCode.TRANSPORT_LOST.value, "message": "the connection was lost"}, 0
    try:
        with trio.move_on_after(req.timeout_ms / 1000 + ctx.limits.deadline_grace_ms / 1000):
            while True:
                event = await stream.receive.receive()
                if isinstance(event, events.Columns | events.Rows):
                    await send({"type": "http.response.body", "body": event.data,
                                "more_body": True})  # fmt: skip
                    stream.consumed(len(event.data))
                    continue
                if isinstance(event, events.Done | events.Error):
                    kind, obj = _record(event.data)
                    _learn(ctx.table, session, obj)
                    if kind == "error":
                        return obj, 0
                    line = {"statement": {"index": index, "rows": obj.get("rows", 0),
                                          "result_sets": obj.get("result_sets", 0),
                                          "elapsed_ms": obj.get("elapsed_ms", 0)}}  # fmt: skip
                    await send({"type": "http.response.body", "body": ndjson_line(line),
                                "more_body": True})  # fmt: skip
                    return None, int(obj.get("rows", 0))
        return {"code": ErrorCode.QUERY_TIMEOUT.value, "message": "no answer in time"}, 0
    finally:
        stream.release("done")
