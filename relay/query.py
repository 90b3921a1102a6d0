"""`POST /v1/tunnels/{tunnel}/query`: from an HTTP request to a QUERY stream and back, bytes intact.

Order of checks (cheapest first, nothing reaches a connector before the token is verified):

1. the tunnel exists (404 tunnel.unknown);
2. this address has not failed authentication too often (429, before any token work);
3. the bearer token verifies (401 auth.*), then the identity's query rate (429 limits.rate_limited);
   (steps 1-3 are the relay app's, relay/app.py: it hands this module the tunnel, the verified
   identity and token, the limits and the counters, and nothing else)
4. the body is at most `max_body_bytes` (413) and a valid query request (400 request.invalid);
5. the query is admitted (503 tunnel.no_connector / connector.draining; 429
   limits.too_many_queries for an identity at its cap, or a tunnel still full after the admission
   wait, which counts against timeout_ms; see relay/registry.py), a connection is picked, the
   client's query_id is new (409 query.duplicate), and the QUERY goes out with the attestation.

Then the first event decides the response: COLUMNS/ROWS -> 200 NDJSON streamed as the payload bytes
arrive (never parsed or re-encoded), DONE -> 200, ERROR -> the status of its code with the record as
body. Credit is returned only after the HTTP server accepted the bytes, so a slow client slows the
connector instead of filling the relay's memory. If the client goes away the stream is CANCELled;
if the connector connection is lost the body ends with the `transport.lost` record.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import trio

from protocol import (
    ErrorCode,
    LocalProtocolError,
    canonical_json,
    error_record,
    events,
    http_status,
    make_attestation,
)
from relay.http import (
    NDJSON_TYPE,
    HttpError,
    Message,
    Receive,
    ReceiveUntil,
    Scope,
    Send,
    read_body,
    receive_until,
    send_json,
)
from relay.logs import log_event, query_summary
from relay.registry import RouteRefused
from relay.request import QueryRequest, parse_query_request
from relay.session import ConnectorSession, RelayStream

if TYPE_CHECKING:
    from identity.oidc import Identity
    from relay.config import Limits
    from relay.limits import RefusalCounters
    from relay.registry import AdmissionSlot, TunnelState

__all__ = ["handle_query"]

#: A client must deliver its (small) request body within this many seconds (slow-loris guard).
BODY_TIMEOUT_S = 30.0
#: Coalesce buffered chunks into HTTP writes of up to this many bytes.
MAX_WRITE = 256 * 1024


_Result = events.Columns | events.Rows | events.Done | events.Error
_LOST = error_record(ErrorCode.TRANSPORT_LOST, "the stream ended without a terminal record")


def _error_code(record: bytes) -> str:
    try:
        code = json.loads(record)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return ErrorCode.INTERNAL
    return code if isinstance(code, str) else ErrorCode.INTERNAL


@dataclass(frozen=True)
class SignedQuery:
    """A QUERY's members and the relay's attestation over them, before its stream id is known
    (a connection assigns it when the stream opens: ``session.open_stream(signed.frame)``)."""

    #: query_id, token, sql, query, params, options: what the attestation covers
    members: dict[str, Any]
    attestation: dict[str, Any]
    session: Mapping[str, Any] | None

    def frame(self, stream_id: int, _session_id: str = "") -> events.Query:
        return events.Query(
            stream_id=stream_id,
            attestation=self.attestation,
            session=dict(self.session) if self.session is not None else None,
            **self.members,
        )

    def size(self) -> int:
        """The QUERY payload size (what `Connection.send` encodes: every member, the session
        member too). Signing encoded each member already, so this cannot fail."""
        payload = {**self.members, "params": dict(self.members["params"])}
        payload["attestation"] = self.attestation
        if self.session is not None:
            payload["session"] = dict(self.session)
        return len(canonical_json(payload))


def sign_query(
    connection: ConnectorSession,
    token: str,
    req: QueryRequest | None,
    session: Mapping[str, Any] | None = None,
    *,
    timeout_ms: int = 0,
    token_sha256: str | None = None,
) -> SignedQuery:
    """Attest ``req``'s QUERY with the key the connector verified in ``connection``'s HELLO (a
    session's ``session`` member included). ``req`` None: a session operation without a
    statement (begin, commit, ...), whose options are ``timeout_ms`` and no row limit.
    ``token_sha256``: the hex SHA-256 of ``token`` when known (the verified identity's), and
    ``req.params_json`` when set: what the attestation hashes, not encoded or hashed again.

    Raises:
        ValueError, TypeError: a member cannot be canonically encoded.
    """
    query_id, sql, query, params, options = (
        (req.query_id, req.sql, req.query, req.params, req.options)
        if req is not None
        else (str(uuid.uuid4()), None, None, {}, {"max_rows": None, "timeout_ms": timeout_ms})
    )
    members: dict[str, Any] = {
        "query_id": query_id,
        "token": token,
        "sql": sql,
        "query": query,
        "params": params,
        "options": options,
    }
    attestation = make_attestation(
        connection.relay_key,
        relay_key_id=connection.relay_key_id,
        session_id=connection.session_id,
        now=time.time(),
        session=session,
        params_json=req.params_json if req is not None else None,
        token_sha256=token_sha256,
        **members,
    )
    return SignedQuery(members, attestation, session)


async def handle_query(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    tunnel: TunnelState,
    identity: Identity,
    token: str,
    limits: Limits,
    counters: RefusalCounters,
    started: float,
) -> None:
    """Serve one query request from step 4 on (see the module docstring), for `identity` whose
    bearer `token` verified, on `tunnel`, since trio time `started`; refusals raise `HttpError`
    (or, from the registry, `RouteRefused`). Each answered query is counted in `counters`."""
    until = receive_until(receive, scope)
    body = await read_body_in_time(scope, receive, limits, until=until)
    req = parse_query_request(
        body, max_timeout_ms=limits.query_timeout_ms, max_param_bytes=limits.max_param_bytes
    )
    # before admission: a statement no connection accepts neither waits for nor takes a slot
    _check_size(req, tunnel.max_statement_bytes())
    key = f"{identity.issuer}\n{identity.subject}"
    wait_s = min(limits.admission_wait_ms, req.timeout_ms) / 1000

    async def client_gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async with tunnel.slot(key, wait_s=wait_s, client_gone=client_gone) as slot:
        waited_ms = round(slot.waited_s * 1000)
        if waited_ms > 0:  # the admission wait counts against the query's deadline
            req = replace(req, timeout_ms=max(1, req.timeout_ms - waited_ms))
        # A query refused unexecuted is placed on another connection (SPEC 6.4); when none is
        # left, the refusal is the answer.
        refusal: bytes | None = None
        while True:
            try:
                refusal = await _send_admitted(tunnel, slot, receive, send, req, identity, token,
                                               started, limits, counters,
                                               first=refusal is None, until=until)  # fmt: skip
            except (HttpError, RouteRefused) as exc:  # pick(): connector.draining
                if refusal is None or exc.code != ErrorCode.CONNECTOR_DRAINING:
                    raise
                await send_json(send, http_status(exc.code), refusal, extra_headers=_qid(req))
                return
            if refusal is None:
                return


class _BodyLate(Exception):
    """The request body's deadline passed."""


async def read_body_in_time(
    scope: Scope, receive: Receive, limits: Limits, *, until: ReceiveUntil | None = None
) -> bytes:
    """The request body, at most ``max_body_bytes``, within `BODY_TIMEOUT_S` (else 408).

    One deadline for the whole body, kept by ``until`` (`receive_until` of the scope): a body
    the server already read costs no cancel scope."""
    deadline = trio.current_time() + BODY_TIMEOUT_S
    receive_by = until or receive_until(receive, scope)

    async def receive_in_time() -> Message:
        message = await receive_by(deadline, None)
        if message is None:
            raise _BodyLate
        return message

    try:
        return await read_body(scope, receive_in_time, limit=limits.max_body_bytes)
    except _BodyLate:
        raise HttpError(
            ErrorCode.REQUEST_INVALID,
            f"the request body did not arrive within {BODY_TIMEOUT_S:g} s",
            status=408,
        ) from None


def _check_frame_size(signed: SignedQuery, session: ConnectorSession) -> None:
    """413 request.too_large when the QUERY payload is over the connection's max_frame."""
    size = signed.size()
    if size > session.conn.max_frame:
        raise _frame_too_large(size, session)


def _frame_too_large(size: int, session: ConnectorSession) -> HttpError:
    return HttpError(
        ErrorCode.REQUEST_TOO_LARGE,
        f"the query frame would be {size} bytes; the connector accepts at most "
        f"{session.conn.max_frame}",
    )


def _check_size(req: QueryRequest, limit: int | None) -> None:
    """413 request.too_large when ``req.sql`` is longer than ``limit`` (None: no limit known)."""
    if limit is not None and req.sql_bytes > limit:
        raise HttpError(
            ErrorCode.REQUEST_TOO_LARGE,
            f"'sql' is {req.sql_bytes} bytes (UTF-8); the connector accepts statements up to "
            f"{limit}: send a shorter statement, pass values as parameters, or use a named query",
        )


async def _send_admitted(
    tunnel: TunnelState,
    slot: AdmissionSlot | None,
    receive: Receive,
    send: Send,
    req: QueryRequest,
    identity: Identity,
    token: str,
    started: float,
    limits: Limits,
    counters: RefusalCounters,
    *,
    first: bool,
    connection: ConnectorSession | None = None,
    session_member: Mapping[str, Any] | None = None,
    exchange: _Exchange | None = None,
    until: ReceiveUntil | None = None,
) -> bytes | None:
    """Place an admitted query on a connection and relay its answer (steps 5 and on); return
    the refusal record when the connector refused it unexecuted (ERROR connector.draining before
    any result: nothing was sent to the client, and the connection now counts as draining).

    A session's ``run`` (relay/sessions.py) passes its pinned ``connection``, the QUERY's
    ``session_member`` and an ``exchange`` that receives the terminal record; no slot.
    ``until``: `receive_until` of the request (made from ``receive`` when not given)."""
    session = connection or tunnel.pick()
    _check_size(req, session.conn.max_statement_bytes)  # before any signing or encoding
    try:
        # Signing encodes every member (the statement and token as UTF-8, params, options and
        # session as canonical JSON; the params as the request's check encoded them, the token
        # as the verifier hashed it): a QUERY that signs also encodes.
        signed = sign_query(session, token, req, session_member, token_sha256=identity.token_sha256)
    except (ValueError, TypeError):
        raise HttpError(
            ErrorCode.REQUEST_INVALID, "the request holds text that is not valid Unicode"
        ) from None
    if first and req.client_query_id:
        # a QUERY that is not sent must not use up its query_id: the size first
        _check_frame_size(signed, session)
        if not tunnel.query_ids.remember(req.query_id, now=time.time()):
            raise HttpError(
                ErrorCode.QUERY_DUPLICATE,
                "a query with this query_id was already sent; use a new query_id to run it again",
                query_id=req.query_id,
            )
    try:
        # The QUERY is encoded once, here; a payload over max_frame is refused with nothing
        # queued (the connection stays usable).
        stream = session.open_stream(signed.frame, wake_writer=False)
    except LocalProtocolError as exc:
        if exc.error_code == ErrorCode.REQUEST_TOO_LARGE:
            raise _frame_too_large(signed.size(), session) from None
        # Not expected: pick() checked capacity, and a request that signs also encodes. Were it
        # to happen, only this query fails: nothing was queued and the connection carries on.
        log_event("query.not_sent", level=logging.ERROR, query_id=req.query_id, why=exc)
        raise HttpError(
            ErrorCode.INTERNAL,
            "the relay could not send the query to the connector; retry it (the cause is in "
            f"the relay's log under query_id {req.query_id})",
            query_id=req.query_id,
        ) from None
    if slot is not None:
        tunnel.placed(slot)
    fields: dict[str, Any] = {
        "tunnel": tunnel.name,
        "connector": session.connector_id,
        "session": session.session_id,
        "stream": stream.stream_id,
        "query_id": req.query_id,
        "sub": identity.subject,
    }
    outcome = "cancelled"
    sent = 0
    exchange = exchange or _Exchange()
    try:
        await session.send_queued()  # the QUERY, from this task when no write is in progress
        grace_s = limits.deadline_grace_ms / 1000
        outcome, sent = await _relay_stream(
            stream, receive, until or receive_until(receive), send, req, exchange, grace_s=grace_s
        )
    finally:
        stream.release("client went away" if outcome == "cancelled" else "done")
        elapsed = round((trio.current_time() - started) * 1000, 1)
        counters.count("queries")
        query_summary.record(elapsed, error=None if outcome == "done" else outcome)
        log_event(
            "query", level=logging.DEBUG, **fields, outcome=outcome, bytes=sent, elapsed_ms=elapsed
        )
    return exchange.refusal


@dataclass
class _Exchange:
    """What the disconnect watcher needs: whether the answer's last bytes were handed over."""

    answered: bool = False
    gone: bool = False
    #: the connector's ERROR connector.draining record, when it refused the query unexecuted
    refusal: bytes | None = None
    #: the terminal record (DONE or ERROR line) the connector sent, when one arrived
    terminal: bytes | None = None
    #: called with the terminal record as soon as it arrives, before the client can have it
    #: (a session learns its state and stops being busy before its client can send the next op)
    on_terminal: Callable[[bytes], None] | None = None

    def finish(self, terminal: bytes) -> None:
        """The connector's terminal record arrived (call before it is written to the client)."""
        self.terminal = terminal
        if self.on_terminal is not None:
            self.on_terminal(terminal)


class _ClientGone(Exception):
    """The client disconnected before the stream's first event."""


async def _first(stream: RelayStream, until: ReceiveUntil, idle_s: float) -> _Result | None:
    """The stream's first event, or None after `idle_s` seconds of silence.

    Waits in the client's ``receive()`` (the only message left to come is http.disconnect), in
    the scope ``until`` waits in (`receive_until`: the server's own): it ends at the deadline,
    and the session cancels it when an event arrives for the stream (`RelayStream.waiter`): one
    task and one scope watch all three, with no watcher task per query.

    Raises:
        _ClientGone: the client disconnected first.
    """
    deadline = trio.current_time() + idle_s
    while True:
        if stream.receive.ready():
            try:
                return stream.receive.receive_nowait()  # type: ignore[return-value]
            except trio.EndOfChannel:  # pragma: no cover - the session ends streams with ERROR
                return events.Error(stream.stream_id, _LOST)
        if trio.current_time() >= deadline:
            return None
        try:
            message = await until(deadline, stream.wait_in)
        finally:
            stream.waiter = None
        if message is not None and message["type"] == "http.disconnect":
            raise _ClientGone


async def _watch_disconnect(receive: Receive, scope: trio.CancelScope, exchange: _Exchange) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # The server also reports http.disconnect once a complete answer is sent: only a
            # disconnect before that is a client that went away.
            if not exchange.answered:
                exchange.gone = True
                scope.cancel()
            return


async def _relay_stream(
    stream: RelayStream,
    receive: Receive,
    until: ReceiveUntil,
    send: Send,
    req: QueryRequest,
    exchange: _Exchange,
    *,
    grace_s: float,
) -> tuple[str, int]:
    """Forward the stream's events to the HTTP response; (outcome, bytes sent).

    The connector enforces timeout_ms; the relay's own backstop is an idle deadline: no frame for
    timeout_ms + grace_s (time spent writing to a slow client does not count) -> CANCEL.
    """
    idle_s = req.timeout_ms / 1000 + grace_s
    try:
        first = await _first(stream, until, idle_s)
    except _ClientGone:
        exchange.gone = True
        return "cancelled", 0
    if first is None:
        exchange.answered = True  # the timeout record ends the answer
        await _timeout(stream, send, req, started=False, grace_s=grace_s)
        return "timeout", 0
    if isinstance(first, events.Error) and _error_code(first.data) == ErrorCode.CONNECTOR_DRAINING:
        exchange.refusal = first.data  # refused unexecuted (SPEC 6.4): placed again
        return "connector.draining", 0
    if isinstance(first, events.Done | events.Error):
        exchange.finish(first.data)
        status = 200 if isinstance(first, events.Done) else http_status(_error_code(first.data))
        ctype = NDJSON_TYPE if status == 200 else b"application/json"
        headers = _qid(req)
        if status == 429:  # a connector's limit: the client should come back later
            headers.append((b"retry-after", b"1"))
        exchange.answered = True
        await send_json(send, status, first.data, content_type=ctype, extra_headers=headers)
        return _outcome(first), len(first.data)
    data, credit, terminal = _collect(stream, first)
    if terminal is not None:
        # The whole result came at once: one complete response, no chunked encoding.
        exchange.finish(terminal.data)
        exchange.answered = True
        await send_json(send, 200, data, content_type=NDJSON_TYPE, extra_headers=_qid(req))
        stream.consumed(credit)
        return _outcome(terminal), len(data)
    # A streamed answer: from here a watcher task looks out for the client (this task may wait
    # long in a write to a slow client, and must not drain the stream into a closed response).
    sent = 0
    outcome = "cancelled"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope, exchange)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", NDJSON_TYPE),
                    (b"cache-control", b"no-store"),
                    *_qid(req),
                ],
            }
        )
        while True:
            exchange.answered = terminal is not None
            if terminal is not None:
                exchange.finish(terminal.data)
            await send({"type": "http.response.body", "body": data, "more_body": terminal is None})
            sent += len(data)
            stream.consumed(credit)
            if terminal is not None:
                outcome = _outcome(terminal)
                break
            pending = await _next(stream, idle_s)
            if pending is None:
                exchange.answered = True  # the timeout record ends the answer
                await _timeout(stream, send, req, started=True, grace_s=grace_s)
                outcome = "timeout"
                break
            data, credit, terminal = _collect(stream, pending)
        nursery.cancel_scope.cancel()
    if exchange.gone:
        outcome = "cancelled"
    return outcome, sent


def _collect(stream: RelayStream, event: _Result) -> tuple[bytes, int, _Result | None]:
    """`event` plus whatever else is already buffered (up to MAX_WRITE bytes) as one write:
    (bytes, flow-controlled bytes among them, the terminal event if it is among them)."""
    chunks: list[bytes] = []
    size = credit = 0
    while True:
        chunks.append(event.data)
        size += len(event.data)
        if isinstance(event, events.Done | events.Error):
            return b"".join(chunks), credit, event
        credit += len(event.data)
        if size >= MAX_WRITE:
            break
        try:
            event = stream.receive.receive_nowait()  # type: ignore[assignment]
        except trio.WouldBlock:
            break
    return b"".join(chunks), credit, None


def _outcome(terminal: _Result) -> str:
    return "done" if isinstance(terminal, events.Done) else _error_code(terminal.data)


async def _next(stream: RelayStream, idle_s: float) -> _Result | None:
    """The stream's next event, or None after `idle_s` seconds of silence."""
    with trio.move_on_after(idle_s):
        try:
            return await stream.receive.receive()  # type: ignore[return-value]
        except trio.EndOfChannel:  # pragma: no cover - the session always ends streams with ERROR
            return events.Error(stream.stream_id, _LOST)
    return None


def _qid(req: QueryRequest) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-edgetds-query-id", req.query_id.encode("ascii")),
        (b"x-content-type-options", b"nosniff"),
    ]


async def _timeout(
    stream: RelayStream, send: Send, req: QueryRequest, *, started: bool, grace_s: float
) -> None:
    """The connector said nothing for longer than the query may take: cancel, end the response."""
    stream.release("timeout at the relay")
    error = HttpError(
        ErrorCode.QUERY_TIMEOUT,
        f"no answer from the connector within {req.timeout_ms} ms (+{grace_s:g} s grace)",
        query_id=req.query_id,
    )
    log_event("query.timeout", level=logging.WARNING, query_id=req.query_id)
    if started:
        await send({"type": "http.response.body", "body": error.body(), "more_body": False})
    else:
        await send_json(send, error.status, error.body(), extra_headers=_qid(req))
