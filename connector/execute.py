"""Run one authorized query on a pooled python-tds connection and stream its results.

Strategy:

1. Borrow a connection of the role's login (connector/pool.py). In one step (`_Reader.begin`): set
   the ``sp_set_session_context`` keys (subject, issuer, query id) with ``@read_only = 1`` so
   row-level security can rely on them, on a reused connection in a request that carries the TDS
   RESETCONNECTION flag (the server resets the session first, as ``sp_reset_connection`` does:
   nothing of the last borrower remains), then run the statement with every parameter bound
   (``sp_executesql``; never interpolated) and fetch the first chunk of rows. A statement the
   read-only check classified as one plain SELECT (``ExecRequest.one_request``) goes in the same
   request as the context, as the second RPC of a batch of RPCs (one round trip instead of two);
   if the context RPC fails, its answer is read no further, the statement's results are never
   read and the connection is discarded. Any other statement is sent only once the context is set.
   Up to the first chunk, no worker-thread call when the answers are small (`_begin_here`:
   python-tds writes each request and parses each answer in memory, in the Trio thread, and the
   socket is read and written with Trio's I/O waits; connector/_tdsio.py).
2. A result that ends within that first chunk (the common small result) goes to the `Sink` (the
   tunnel stream) from there: no other task, no channel. A larger one: a producer task fetches
   the next chunks in worker threads, encodes them to NDJSON there (CPU off the Trio thread), and
   hands each over a bounded memory channel; the consumer passes it to the `Sink`, which waits for
   send window (CREDIT). A slow client therefore stalls the fetching: memory stays at a few
   chunks per query, whatever the result size.
3. Caps: max_rows and max_bytes end the stream with ``limits.result_too_large``; the timeout and
   a cancel request stop the statement on the server: between chunks with a clean
   ``cursor.cancel()`` in the worker (the connection stays pooled), while a worker is blocked in
   python-tds by an ATTENTION packet and, after a grace period, by cutting the socket (the
   connection is discarded). See connector/pool.py.

The caller writes the terminal DONE/ERROR line from the returned `ResultTotals` or the raised
`QueryFailed` (both in connector/results.py).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import re
import struct
import threading
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar

import pytds
import trio
from OpenSSL.SSL import Error as OpenSSLError
from pytds import tds_base
from pytds.collate import raw_collation
from pytds.tds_writer import _TdsWriter

from connector import _tdsio, _tdsread, _tdstypes
from connector._watchdog import INTERRUPT_GRACE_S, Watch, watching
from connector.encode import BoundParam, ParamError, RowEncoder, result_shape, wire_type
from connector.pool import DatabaseUnavailable, LoginPool, PooledConnection
from connector.results import CancelToken, QueryFailed, ResultTotals, Sink, SinkClosed
from protocol import ErrorCode

__all__ = [
    "CONTEXT_KEYS",
    "CONTEXT_VALUE_UNITS",
    "ExecRequest",
    "describe_sql_error",
    "execute",
    "execute_pinned",
    "preamble_batch",
    "reset_connection_flag",
    "run_statement",
    "send_context_with",
    "utf16_units",
]

log = logging.getLogger("edgetds.connector.execute")

#: sp_set_session_context keys set (read-only) before every query: read them in SQL Server with
#: SESSION_CONTEXT(N'edgetds.sub') etc., e.g. in a row-level security predicate.
CONTEXT_KEYS = ("edgetds.sub", "edgetds.iss", "edgetds.query_id")
#: the longest session-context value, in UTF-16 code units: they are bound as nvarchar(4000)
#: (sp_set_session_context's value is a sql_variant, which holds no (max) type)
CONTEXT_VALUE_UNITS = 4000


def utf16_units(text: str) -> int:
    """``text``'s length as SQL Server counts nvarchar: a character beyond U+FFFF counts two."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def preamble_batch() -> str:
    """The batch that sets the CONTEXT_KEYS (values bound as @c0, @c1, ..., in that order)."""
    return _PREAMBLE


_CONTEXT_TYPE = f"nvarchar({CONTEXT_VALUE_UNITS})"
_PREAMBLE = ";".join(
    f"EXEC sp_set_session_context @key = N'{key}', @value = @c{i}, @read_only = 1"
    for i, key in enumerate(CONTEXT_KEYS)
)


@dataclass(frozen=True)
class ExecRequest:
    query_id: str
    sql: str
    params: Sequence[BoundParam]
    #: sp_set_session_context values, keyed like CONTEXT_KEYS
    context: Mapping[str, str]
    max_rows: int | None = None
    max_bytes: int | None = None
    timeout_s: float | None = None
    #: target size of one ROWS payload (the SPEC recommends 16-64 KiB)
    chunk_bytes: int = 32 * 1024
    fetch_rows: int = 500
    #: reset the connection and set the session context first (False: a session's statement,
    #: on the connection its begin set up)
    setup: bool = True
    #: send the session context and the statement as two RPCs of ONE request (one round trip);
    #: only for a statement the read-only check classified as one plain SELECT: SQL Server runs
    #: the second RPC even when the first failed, and such a statement changes nothing then (its
    #: results are never read: the connection is discarded). False: two requests, the statement
    #: only once the context is set.
    one_request: bool = False


#: what one fetch of the reader gives: (columns line or None, row lines, row count)
_Chunk = tuple[bytes | None, bytes, int]


class _StaleConnection(Exception):
    """A reused connection failed at reset, before the statement was sent."""


class _ResetFailed(Exception):
    """Worker side of `_StaleConnection`: the request carrying the reset failed in transport."""


class _SessionSetupFailed(Exception):
    """SQL Server answered the reset + session context request (before the statement) with an
    error: the connector's side of the query failed, not the client's SQL."""


#: TDS packet header status bit RESETCONNECTION (MS-TDS 2.2.3.1.2): the server resets the session
#: (as sp_reset_connection does) before it runs the request; valid on a request's first packet.
_RESETCONNECTION = 0x08


#: MS-TDS 2.2.6.6 BatchFlag: separates the RPCs of one RPC request (0xFF from TDS 7.2 on, 0x80
#: before)
_RPC_BATCH_FLAG = 0xFF
_RPC_BATCH_FLAG_TDS71 = 0x80
#: DONEPROC status DONE_RPCINBATCH (MS-TDS 2.2.7.8): this DONEPROC ends an RPC of a batch of RPCs
#: other than the last one. It marks where the session context's answer ends.
_DONE_RPCINBATCH = 0x80
_DONEPROC = tds_base.TDS_DONEPROC_TOKEN


class _FirstRpcPacketFlag:
    """Stands in for python-tds's writer transport for one request: sets RESETCONNECTION in the
    status byte of the first RPC packet written (python-tds has no API for the flag)."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.pending = True

    def sendall(self, data: bytes, flags: int = 0) -> None:
        if self.pending and data[0] == tds_base.PacketType.RPC:
            self.pending = False
            packet = bytearray(data)
            packet[1] |= _RESETCONNECTION
            data = bytes(packet)
        self.transport.sendall(data, flags)


class reset_connection_flag:  # noqa: N801 - used as a context manager, like a function's
    """Send the next RPC with RESETCONNECTION: the reset rides on that request (one round trip
    instead of an sp_reset_connection RPC of its own). A class rather than a
    ``contextlib.contextmanager``: it is entered once per query on a reused connection."""

    def __init__(self, session: Any) -> None:
        self._writer = session._writer

    def __enter__(self) -> None:
        writer = self._writer
        self._original = writer._transport
        writer._transport = _FirstRpcPacketFlag(self._original)

    def __exit__(self, *exc_info: object) -> None:
        self._writer._transport = self._original


class _ResetAckFilter(logging.Filter):
    """python-tds 1.17.1 logs the server's RESETCONNECTION acknowledgement (ENVCHANGE type 18) as
    an unknown type at warning level, once per query: drop exactly that record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == "unknown env type: %d, skipping" and record.args == (18,))


logging.getLogger("pytds").addFilter(_ResetAckFilter())


#: SQL Server severities from 20 up are fatal: the server ends the connection (no SQL mistake)
_FATAL_SEVERITY = 20


def describe_sql_error(exc: BaseException) -> str:
    """``SQL Server error N (state S, class C): text`` (or the exception's type and text): the
    detail a log gets."""
    number = getattr(exc, "msg_no", None)
    text = getattr(exc, "text", None) or str(exc)
    if number is None:
        return f"{type(exc).__name__}: {text}"
    state, severity = getattr(exc, "state", 0), getattr(exc, "severity", 0)
    return f"SQL Server error {number} (state {state}, class {severity}): {text}"


def sql_error(
    exc: tds_base.Error, outcome: ResultTotals | None = None, *, redact: Callable[[str], str] = str
) -> QueryFailed:
    """The client's own statement failed with ``exc``: ``sql.error`` with SQL Server's number and
    message (``redact`` takes the login and host out of it). A fatal severity or a client-side
    connection error is no SQL mistake: ``connector.database_unavailable``, cause logged."""
    number = int(getattr(exc, "msg_no", 0) or 0)
    severity = int(getattr(exc, "severity", 0) or 0)
    if severity >= _FATAL_SEVERITY or isinstance(exc, tds_base.InterfaceError):
        return QueryFailed(
            ErrorCode.CONNECTOR_DATABASE_UNAVAILABLE,
            "the connection to SQL Server failed during the query; retry it",
            outcome=outcome,
            detail=describe_sql_error(exc),
        )
    text = redact(getattr(exc, "text", None) or str(exc))
    info = {"number": number, "state": int(getattr(exc, "state", 0) or 0), "class": severity}
    return QueryFailed(
        ErrorCode.SQL_ERROR, f"SQL Server error {number}: {text}", sql=info, outcome=outcome
    )


# ------------------------------------------------------------------------------ worker side


#: a text or binary declaration: (n, var, char|binary, length or max)
_TEXT_OR_BINARY = re.compile(r"(n?)(var)?(char|binary)\((\d+|max)\)")


@functools.lru_cache(maxsize=256)
def _value_limit(declaration: str) -> tuple[str, int | None] | None:
    """What a declared type's value is measured in ("code page", "utf-16" or "bytes") and its
    limit in bytes (None: max); None for every other type."""
    m = _TEXT_OR_BINARY.fullmatch(declaration)
    if m is None:
        return None
    wide, kind, length = m.group(1), m.group(3), m.group(4)
    unit = "bytes" if kind == "binary" else "utf-16" if wide else "code page"
    limit = None if length == "max" else int(length) * (2 if unit == "utf-16" else 1)
    return unit, limit


def check_values_fit(params: Sequence[BoundParam], collation: Any) -> None:
    """Refuse, before anything is sent, a text or binary value its declared type cannot carry:
    longer than the declared length (SQL Server refuses such an RPC parameter as a malformed
    request, error 8016), or, for char and varchar, with a character the database's code page
    (its collation's) does not have, which python-tds cannot encode.

    Raises:
        ParamError: naming the parameter (as the client named it, without "@") and its type,
            never the value.
    """
    for param in params:
        value = param.value
        measure = None if value is None else _value_limit(param.sql_type)
        if measure is None:
            continue
        unit, limit = measure
        if unit == "code page":
            codec = collation.get_codec()
            try:
                size = len(codec.encode(value)[0])
            except UnicodeError:
                raise ParamError(
                    param.name.removeprefix("@"),
                    f"{param.sql_type} holds only the characters of the database's code page "
                    f"({codec.name}); declare nvarchar for this value",
                ) from None
        elif limit is None or (unit == "utf-16" and 4 * len(value) <= limit):
            continue  # (a character is two or four bytes in UTF-16: a short value fits)
        elif unit == "utf-16":
            size = 2 * utf16_units(value)
        else:
            size = len(value)
        if limit is not None and size > limit:
            extra = " (a character beyond U+FFFF takes two)" if unit == "utf-16" else ""
            raise ParamError(
                param.name.removeprefix("@"),
                f"the value is longer than {param.sql_type} holds{extra}",
            )


def run_statement(cursor: Any, sql: str, params: Sequence[BoundParam]) -> None:
    """Execute ``sql`` with bound parameters via sp_executesql.

    python-tds's own execute() only knows %s / %(name)s placeholders and renames parameters to
    @P1..; our statements use T-SQL @names, so build the sp_executesql RPC exactly as
    ``_TdsSession.execute`` does (python-tds is pinned ==1.17.1), with our names and declared types.
    """
    sess = cursor._session
    _submit_statement(sess, sql, params)
    _first_result(sess)


def _first_result(sess: Any) -> None:
    """Read a request's answer up to its first result (or its end), as python-tds's
    ``execute`` does after sending."""
    sess.begin_response()
    sess.find_result_or_done()


def _submit_statement(sess: Any, sql: str, params: Sequence[BoundParam]) -> None:
    """`run_statement`'s request, sent; its answer not read (without parameters a SQL batch, as
    python-tds's ``cursor.execute(sql)`` sends it)."""
    if not params:
        sess._ensure_transaction()  # python-tds's, as its execute() does (autocommit: nothing)
        sess.submit_plain_query(sql)
        return
    check_values_fit(params, sess._tds.collation or raw_collation)
    sess.submit_rpc(tds_base.SP_EXECUTESQL, _executesql_params(sess, sql, params), 0)


def _executesql_params(sess: Any, sql: str, params: Sequence[BoundParam]) -> list[Any]:
    """sp_executesql's parameters: the statement, the declaration (when there are parameters;
    declared types come from our validated BoundParam.sql_type, see encode.PreciseText), the
    values."""
    head = [sess.make_param("", sql)]
    if params:
        declaration = ",".join(f"{p.name} {p.sql_type}" for p in params)
        head.append(sess.make_param("", declaration))
    return head + [p.to_pytds() for p in params]


_BYTE, _USMALLINT = tds_base._byte, tds_base._usmallint_le
_INT, _INT8 = tds_base._int_le, tds_base._int8_le


class _RequestBody(_TdsWriter):  # type: ignore[misc]
    """python-tds's writer, into one bytearray instead of packets: the parts of a request are
    serialized here by python-tds's own type serializers, and the whole goes to the session's
    writer in one write (which cuts it into the same packets as the many small writes did)."""

    def __init__(self, sess: Any) -> None:
        # no transport and no packets: nothing is sent from here (``_tds``: the serializers of
        # datetimes and of byte strings read the session's settings through it)
        self._tds = sess
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def pack(self, struc: struct.Struct, *args: Any) -> None:
        self.data += struc.pack(*args)

    # the writes of python-tds's value serializers, straight to `pack`'s work
    def put_byte(self, value: int) -> None:
        self.data += _BYTE.pack(value)

    def put_usmallint(self, value: int) -> None:
        self.data += _USMALLINT.pack(value)

    def put_int(self, value: int) -> None:
        self.data += _INT.pack(value)

    def put_int8(self, value: int) -> None:
        self.data += _INT8.pack(value)

    def write_string(self, s: str, codec: Any) -> None:
        buf, consumed = codec.encode(s)
        assert consumed == len(s)
        self.data += buf


_T = TypeVar("_T")
_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class _Remembered(Generic[_K, _V]):
    """The last ``size`` values put, by key; shared by the worker threads (a read is one dict
    lookup, atomic; a put takes a lock)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._values: dict[_K, _V] = {}
        self._lock = threading.Lock()
        #: the value put last under ``key``, or None (the dict's own ``get``: no call of ours)
        self.get: Callable[[_K], _V | None] = self._values.get

    def put(self, key: _K, value: _V) -> None:
        with self._lock:
            if key not in self._values and len(self._values) >= self._size:
                del self._values[next(iter(self._values))]  # the oldest
            self._values[key] = value


#: the serialized start of an sp_executesql RPC (ProcID, option flags, the statement and the
#: declaration of its parameters), by (statement, declaration, collation, TDS version): the same
#: statements run again and again. Statements up to `_HEAD_CHARS` characters: a few MiB at most.
_HEADS: _Remembered[tuple[str, str | None, bytes, int], bytes] = _Remembered(256)
_HEAD_CHARS = 4000
#: a parameter's name and TYPE_INFO, serialized, and its value's serializer, by (name, wire
#: declaration, collation, TDS version): python-tds's serializers keep no state of a write
_PARAMS: _Remembered[tuple[str, str, bytes, int], tuple[bytes, Any]] = _Remembered(1024)


def _param_head(
    sess: Any, name: str, sql_type: Any, collation: Any, flags: int = 0
) -> tuple[bytes, Any]:
    """A parameter's name, status flags and TYPE_INFO, serialized as ``_TdsSession.submit_rpc``
    writes them, and the serializer of its value."""
    part = _RequestBody(sess)
    part.put_byte(len(name))
    part.write_ucs2(name)
    part.put_byte(flags)
    serializer = sess._tds.type_factory.serializer_by_type(sql_type=sql_type, collation=collation)
    part.put_byte(serializer.type)
    serializer.write_info(part)
    return bytes(part.data), serializer


def _write_param(body: _RequestBody, sess: Any, param: Any, collation: Any) -> None:
    """One parameter of an RPC (a python-tds ``Param``)."""
    head, serializer = _param_head(sess, param.name, param.type, collation, param.flags)
    body.data += head
    serializer.write(body, param.value)


def _write_rpc_head(
    body: _RequestBody,
    sess: Any,
    sql: str,
    declaration: str | None,
    collation: Any,
    key_collation: bytes,
    version: int,
) -> None:
    """ProcID of sp_executesql, option flags, the statement and its declaration (``version``:
    the session's TDS version)."""
    key = (sql, declaration, key_collation, version)
    head = _HEADS.get(key)
    if head is None:
        part = _RequestBody(sess)
        part.put_smallint(-1)  # ProcIDSwitch, then the ProcID of sp_executesql
        part.put_smallint(tds_base.SP_EXECUTESQL.proc_id)
        part.put_usmallint(0)  # option flags
        _write_param(part, sess, sess.make_param("", sql), collation)
        if declaration is not None:
            _write_param(part, sess, sess.make_param("", declaration), collation)
        head = bytes(part.data)
        if len(sql) <= _HEAD_CHARS:
            _HEADS.put(key, head)
    body.data += head


def _write_bound(
    body: _RequestBody,
    sess: Any,
    param: BoundParam,
    collation: Any,
    key_collation: bytes,
    version: int,
) -> None:
    """A bound parameter: its remembered name and TYPE_INFO, then its value (``version``: the
    session's TDS version)."""
    wire, value = param.wire()
    key = (param.name, wire, key_collation, version)
    known = _PARAMS.get(key)
    if known is None:
        known = _param_head(sess, param.name, wire_type(wire), collation)
        _PARAMS.put(key, known)
    head, serializer = known
    body.data += head
    serializer.write(body, value)


def _submit_executesql_batch(sess: Any, calls: Sequence[tuple[str, Sequence[BoundParam]]]) -> None:
    """Send each (statement, parameters) as an sp_executesql RPC, all in ONE RPC request message
    (MS-TDS 2.2.6.6: RPCReqBatch, BatchFlag, RPCReqBatch, ...): one round trip.

    python-tds 1.17.1 sends one RPC per message (``_TdsSession.submit_rpc``); this writes the same
    bytes per call with the session's type serializers, the batch flag between. What depends only
    on the statement and on the parameters' names and types is serialized once and remembered
    (`_HEADS`, `_PARAMS`); the values are serialized each time.
    """
    sess.messages = []
    sess.output_params = {}
    sess.cancel_if_pending()
    sess.res_info = None
    collation = sess._tds.collation or raw_collation
    key_collation = collation.pack()
    version = sess.tds_version
    tds72 = version >= tds_base.TDS72  # tds_base.IS_TDS72_PLUS, without reading it again
    for _, params in calls:
        check_values_fit(params, collation)
    body = _RequestBody(sess)
    for i, (sql, params) in enumerate(calls):
        if i:
            body.put_byte(_RPC_BATCH_FLAG if tds72 else _RPC_BATCH_FLAG_TDS71)
        declaration = ",".join([f"{p.name} {p.sql_type}" for p in params]) if params else None
        _write_rpc_head(body, sess, sql, declaration, collation, key_collation, version)
        for param in params:
            _write_bound(body, sess, param, collation, key_collation, version)
    with sess.querying_context(tds_base.PacketType.RPC):
        if tds72:
            sess._start_query()  # ALL_HEADERS
        sess._writer.write(body.data)


#: ENVCHANGE type RESETCONNECTION acknowledgement (MS-TDS 2.2.7.9): no value, nothing to change
_ENV_RESET_ACK = 18


def _skip_reset_ack(reader: Any) -> bool:
    """Read past an ENVCHANGE token (its marker read) when its type, in the packet at hand, is the
    RESETCONNECTION acknowledgement: python-tds 1.17.1 would read past it too, but log it first
    as an unknown type at warning level (a log record built, then dropped by `_ResetAckFilter`).
    False: the token is left as it was, for python-tds."""
    pos = reader._pos
    if pos + 3 > reader._size or reader._buf[pos + 2] != _ENV_RESET_ACK:
        return False
    tds_base.skipall(reader, reader.get_smallint())  # the length, then the type and values
    return True


def _read_first_rpc(sess: Any) -> None:
    """Read the answer of the first RPC of a batch of RPCs, up to its DONEPROC (the one with
    DONE_RPCINBATCH): the next token is the second RPC's. Stops at an ERROR token, and at anything
    that says this is not the answer of a batch of RPCs (a result set, the end of the response).

    Raises:
        tds_base.Error: the first RPC failed, or its answer was not what it must be; nothing of
            the second RPC's answer has been read, and none may be: discard the connection.
    """
    while True:
        marker = sess.get_token_id()
        if marker == tds_base.TDS_ENVCHANGE_TOKEN and _skip_reset_ack(sess._reader):
            continue
        if marker == tds_base.TDS_ERROR_TOKEN:
            sess.process_token(marker)  # the message, for the log
            sess.raise_db_exception()
        if marker == tds_base.TDS7_RESULT_TOKEN:
            raise tds_base.Error("the session context request returned a result set")
        if marker in (tds_base.TDS_DONE_TOKEN, tds_base.TDS_DONEINPROC_TOKEN, _DONEPROC):
            sess.process_end(marker)  # raises on DONE_ERROR
            flags = sess.done_flags
            if not flags & tds_base.TDS_DONE_MORE_RESULTS:
                raise tds_base.Error("the response ended with the session context request")
            if marker == _DONEPROC and flags & _DONE_RPCINBATCH:
                sess.messages = []  # the statement's answer starts clean, as a request of its own
                return
        else:
            sess.process_token(marker)


def send_context_with(
    sess: Any, ctx: Sequence[BoundParam], sql: str, params: Sequence[BoundParam]
) -> None:
    """The one-request form: the session context (`preamble_batch` with ``ctx`` as @c0, @c1, ...)
    and ``sql`` as two RPCs of one request, then the context's answer read to its end
    (`_read_first_rpc`); the statement's answer is next (``sess.find_result_or_done()``).

    Raises:
        tds_base.Error: the context failed; nothing of the statement's answer was read, and none
            may be: discard the connection.
    """
    _submit_context_with(sess, ctx, sql, params)
    _read_context_answer(sess)


def _submit_context_with(
    sess: Any, ctx: Sequence[BoundParam], sql: str, params: Sequence[BoundParam]
) -> None:
    """`send_context_with`'s request, sent; its answer not read (`_read_context_answer`)."""
    _submit_executesql_batch(sess, [(_PREAMBLE, ctx), (sql, params)])


def _read_context_answer(sess: Any) -> None:
    """`send_context_with`'s reading: the answer of `_submit_context_with` up to the context's
    end (its Raises)."""
    sess.begin_response()
    _read_first_rpc(sess)


def connection_cursor(conn: Any) -> Any:
    """A cursor of ``conn``, as ``conn.cursor()`` gives: python-tds 1.17.1's non-MARS connection
    cancels the statement its last cursor left pending and closes that cursor, then makes a new
    one over the same session. A cursor keeps nothing of its own (its session, its connection,
    and ``arraysize``, which the connector never sets): the last one, still open, is taken
    again after the same cancel."""
    cursor = getattr(conn, "_active_cursor", None)
    if cursor is None or cursor._session is None or not conn._tds_socket:
        return conn.cursor()
    cursor.cancel()
    return cursor


def _drain(cursor: Any) -> None:
    while cursor.nextset():
        pass


def _setup_failed(exc: BaseException, reset: bool) -> NoReturn:
    """Raise what a failure of the session's setup (the reset and the session context) means.

    Raises:
        _ResetFailed: ``exc`` is a transport failure on a reused connection.
        _SessionSetupFailed: SQL Server refused the session context.
        BaseException: ``exc``, a transport failure on a new connection.
    """
    if isinstance(exc, (OSError, TimeoutError, tds_base.InterfaceError)):
        if reset:
            raise _ResetFailed() from exc
        raise exc
    raise _SessionSetupFailed() from exc


class _Reader:
    """Worker-thread state of one query's cursor. Only ever touched by one thread at a time."""

    def __init__(self, req: ExecRequest) -> None:
        self.req = req
        self.cursor: Any = None
        self.encoder: RowEncoder | None = None
        self.pending_columns: bytes | None = None
        self.finished = False
        self.rows_affected = -1

    def begin(
        self, reset: bool, row_budget: int, conn: pytds.Connection
    ) -> tuple[bytes | None, bytes, int]:
        """Everything up to the first chunk in ONE worker-thread call (`_begin_here` does the
        same from the Trio thread, where it can): set the session context
        (on a reused connection with RESETCONNECTION on that request: nothing of the last
        borrower remains), run the statement, fetch the first chunk (`next_chunk`).

        With ``one_request`` the context and the statement are two RPCs of one request; the
        context's answer is read up to its DONEPROC (`_read_first_rpc`) and, if it failed, not a
        token further: the statement's results are never read.

        Raises:
            _ResetFailed: the reused connection failed before the statement was sent (or, in one
                request, before its results began).
            _SessionSetupFailed: SQL Server refused the session context.
        """
        sess = self.prepare(conn)
        if not self.req.setup:
            return self.statement(sess, row_budget)
        try:
            if self.req.one_request:
                self.write_one_request(sess, reset)
            else:
                self.write_context(sess, reset)
        except (OSError, TimeoutError, tds_base.Error) as exc:
            _setup_failed(exc, reset)
        if self.req.one_request:
            return self.read_one_request(sess, reset, row_budget)
        return self.after_context(sess, reset, row_budget)

    def prepare(self, conn: pytds.Connection) -> Any:
        """The query's cursor, on ``conn``; returns its python-tds session. No I/O when the
        session is idle."""
        _tdstypes.install(conn)  # time types at 100 ns; negative money parameters
        cursor = connection_cursor(conn)
        self.cursor = cursor
        sess = cursor._session
        _tdsread.install(sess)  # fixed-size values of the answer read from the packet buffer
        return sess

    def _context(self) -> list[BoundParam]:
        return [
            BoundParam(f"@c{i}", _CONTEXT_TYPE, self.req.context.get(key, ""))
            for i, key in enumerate(CONTEXT_KEYS)
        ]

    def write_one_request(self, sess: Any, reset: bool) -> None:
        """Send the session context and the statement as two RPCs of one request."""
        with reset_connection_flag(sess) if reset else contextlib.nullcontext():
            _submit_context_with(sess, self._context(), self.req.sql, self.req.params)

    def read_one_request(self, sess: Any, reset: bool, row_budget: int) -> _Chunk:
        """The answer of `write_one_request`, up to the first chunk (`begin`'s Raises)."""
        try:
            _read_context_answer(sess)
        except (OSError, TimeoutError, tds_base.Error) as exc:
            _setup_failed(exc, reset)
        sess.find_result_or_done()  # the statement's answer: the second RPC's tokens
        return self.first_chunk(row_budget)

    def write_context(self, sess: Any, reset: bool) -> None:
        """Send the session context, a request of its own (the statement follows once it is
        set)."""
        with reset_connection_flag(sess) if reset else contextlib.nullcontext():
            _submit_statement(sess, _PREAMBLE, self._context())

    def read_context(self, sess: Any, reset: bool) -> None:
        """The answer of `write_context`, read to its end (`begin`'s Raises)."""
        try:
            _first_result(sess)
            _drain(self.cursor)
        except (OSError, TimeoutError, tds_base.Error) as exc:
            _setup_failed(exc, reset)

    def after_context(self, sess: Any, reset: bool, row_budget: int) -> _Chunk:
        """`read_context`, then `statement`."""
        self.read_context(sess, reset)
        return self.statement(sess, row_budget)

    def statement(self, sess: Any, row_budget: int) -> _Chunk:
        """Run the statement (`run_statement`), up to its first chunk."""
        _submit_statement(sess, self.req.sql, self.req.params)
        return self.read_statement(sess, row_budget)

    def read_statement(self, sess: Any, row_budget: int) -> _Chunk:
        """The answer of the statement's request (`_submit_statement`), up to the first chunk."""
        _first_result(sess)
        return self.first_chunk(row_budget)

    def first_chunk(self, row_budget: int) -> _Chunk:
        """The statement's first chunk, the answer's first result found."""
        self._enter_result_set()
        return self.next_chunk(row_budget)

    def _enter_result_set(self) -> None:
        """Skip row-count-only results; stage COLUMNS of the next result set, if any."""
        while True:
            description = self.cursor.description
            if description:
                self.encoder, self.pending_columns = result_shape(description)
                return
            if self.cursor.rowcount is not None and self.cursor.rowcount >= 0:
                self.rows_affected = max(self.rows_affected, 0) + self.cursor.rowcount
            if not self.cursor.nextset():
                self.finished = True
                self.encoder = None
                return

    def next_chunk(self, row_budget: int, _conn: object = None) -> tuple[bytes | None, bytes, int]:
        """Fetch up to chunk_bytes of rows: (columns line or None, row lines, row count)."""
        columns, self.pending_columns = self.pending_columns, None
        if self.finished or self.encoder is None:
            return columns, b"", 0
        out: list[bytes] = []
        size = 0
        count = 0
        want = max(1, min(self.req.fetch_rows, row_budget))
        while size < self.req.chunk_bytes and count < row_budget:
            rows = _tdsread.fetch_rows(self.cursor._session, min(want, row_budget - count))
            if not rows:
                if self.cursor.nextset():
                    self._enter_result_set()
                else:
                    self.finished = True
                break
            lines = self.encoder.encode_rows(rows)
            out.append(lines)
            size += len(lines)
            count += len(rows)
        return columns, b"".join(out), count

    def cancel(self) -> None:
        if self.cursor is not None:
            self.cursor.cancel()


# ------------------------------------------------------------------------------ trio side


async def execute(
    pool: LoginPool, req: ExecRequest, sink: Sink, cancel: CancelToken
) -> ResultTotals:
    """Run `req` on a connection of `pool`, streaming to `sink`.

    Raises:
        QueryFailed: with code sql.error, query.timeout, query.cancelled,
            limits.result_too_large or connector.database_unavailable.
    """
    started = trio.current_time()
    deadline = started + req.timeout_s if req.timeout_s else math.inf
    outcome = ResultTotals()
    try:
        for attempt in (1, 2):
            async with pool.borrow() as pc:
                try:
                    await _execute_on(pool, pc, req, sink, cancel, deadline, outcome)
                    break
                except _StaleConnection:
                    # a pooled connection died while idle (SQL Server restarted, network cut):
                    # its siblings are as old, drop them; retry once on a new connection. Safe:
                    # the failure came from the reset, before the statement was sent; or, with
                    # one_request, the statement went in the same request and may have run, but
                    # it is one plain SELECT (the read-only check's verdict): running it again
                    # changes nothing, and no result of the first attempt was delivered.
                    log.info("stale pooled connection replaced", extra={"login": pool.name})
                    pool.discard_idle()
                    if attempt == 2:
                        raise DatabaseUnavailable(
                            "the connection to SQL Server failed before the query; retry it",
                            detail=f"login {pool.name!r}: a reused and a new connection both "
                            "failed at the session reset",
                        ) from None
    except DatabaseUnavailable as exc:
        raise QueryFailed(
            ErrorCode.CONNECTOR_DATABASE_UNAVAILABLE,
            exc.message,
            outcome=outcome,
            detail=exc.detail,
        ) from None
    return outcome


async def execute_pinned(
    pool: LoginPool, pc: PooledConnection, req: ExecRequest, sink: Sink, cancel: CancelToken
) -> ResultTotals:
    """Run `req` on ``pc``, a connection a session holds (no borrow, no retry: a failed reused
    connection is the session's end). Raises `QueryFailed` as `execute` does."""
    deadline = trio.current_time() + req.timeout_s if req.timeout_s else math.inf
    outcome = ResultTotals()
    try:
        await _execute_on(pool, pc, req, sink, cancel, deadline, outcome)
    except _StaleConnection:
        raise QueryFailed(
            ErrorCode.CONNECTOR_DATABASE_UNAVAILABLE,
            "the connection to SQL Server failed during the query; retry it",
            outcome=outcome,
            detail=f"login {pool.name!r}: a session's connection failed",
        ) from None
    return outcome


#: the longest answer `_begin_here` reads in the Trio thread; the rest of a longer one is read in
#: the connection's worker thread
_READ_AHEAD = 64 * 1024


async def _begin_here(
    pool: LoginPool, pc: PooledConnection, reader: _Reader, reset: bool, row_budget: int
) -> _Chunk:
    """`_Reader.begin` without the worker thread: each request serialized by python-tds into
    memory, sent and its answer read with Trio's I/O waits, the answer parsed by python-tds from
    memory (connector/_tdsio.py). The same bytes go out, the same answers are read by the same
    code, the same exceptions are raised (`begin`'s Raises); only the thread differs. An answer
    longer than `_READ_AHEAD` is read on, and parsed, in the worker thread, and so is everything
    after it; a connection `_tdsio.Link` cannot drive (MARS, one not idle, a broken one), or one
    where python-tds would begin a transaction of its own (autocommit off, which the connector
    never sets), takes `begin` in the worker thread.

    While an answer is awaited ``pc.busy`` is True: the watchdog stops the statement as it does
    a worker blocked in python-tds (ATTENTION, then the socket cut). A Trio cancellation while
    it is awaited leaves the connection broken (discarded when returned)."""
    req = reader.req
    sess: Any = getattr(getattr(pc.conn, "_tds_socket", None), "main_session", None)
    link = None if pc.broken or sess is None else _tdsio.Link.of(sess)
    if link is None or not sess._env.autocommit:
        return await pool.call(pc, functools.partial(reader.begin, reset, row_budget))
    await trio.lowlevel.checkpoint_if_cancelled()
    if reader.prepare(pc.conn) is not sess:  # no I/O: the session is idle (`Link.of`)
        # (a cursor of a session of its own: MARS, which the connector does not ask for)
        return await pool.call(pc, functools.partial(reader.begin, reset, row_budget))
    if req.setup and req.one_request:
        request = link.collect(functools.partial(reader.write_one_request, sess, reset))
        complete = await _answer(pc, link, request, reset)
        read = functools.partial(reader.read_one_request, sess, reset, row_budget)
        return await _parse(pool, pc, link, complete, read)
    if req.setup:
        request = link.collect(functools.partial(reader.write_context, sess, reset))
        complete = await _answer(pc, link, request, reset)
        if not complete:
            rest = functools.partial(reader.after_context, sess, reset, row_budget)
            return await _parse(pool, pc, link, complete, rest)
        await _parse(pool, pc, link, complete, functools.partial(reader.read_context, sess, reset))
        link = _tdsio.Link.of(sess)
        if link is None:  # the context's answer not read to its end: python-tds's to finish
            return await pool.call(pc, lambda conn: reader.statement(sess, row_budget))
    request = link.collect(functools.partial(_submit_statement, sess, req.sql, req.params))
    complete = await _answer(pc, link, request, None)
    read = functools.partial(reader.read_statement, sess, row_budget)
    return await _parse(pool, pc, link, complete, read)


async def _answer(
    pc: PooledConnection, link: _tdsio.Link, request: bytes, reset: bool | None
) -> bool:
    """`Link.exchange` of ``request`` (True: its whole answer was read). ``reset``: the request
    sets up the session, a failure is `_setup_failed`'s; None: it is the statement's, a failure
    is raised as it is."""
    pc.busy = True
    try:
        return await link.exchange(request, _READ_AHEAD)
    except BaseException as exc:
        pc.broken = True
        if reset is not None and isinstance(exc, (OSError, TimeoutError, tds_base.Error)):
            _setup_failed(exc, reset)
        raise
    finally:
        pc.busy = False


async def _parse(
    pool: LoginPool,
    pc: PooledConnection,
    link: _tdsio.Link,
    complete: bool,
    parse: Callable[[], _T],
) -> _T:
    """``parse()``: python-tds reading the answer `_answer` read, here when it was read whole,
    else in the worker thread (which reads the rest from the socket)."""
    buffered = link.buffered
    assert buffered is not None
    if not complete:
        buffered.release()
        return await pool.call(pc, lambda conn: parse())
    buffered.strict = True  # the whole answer is here: a read past it raises, never blocks
    try:
        return parse()
    except (OSError, tds_base.InterfaceError):
        pc.broken = True  # as `PooledConnection.run` does
        raise
    finally:
        buffered.release()


async def _bounded_call(pool: LoginPool, pc: PooledConnection, fn: Any) -> None:
    """A worker-thread call that cannot outlive the interrupt grace: the socket is cut then."""

    async def guard() -> None:
        await trio.sleep(INTERRUPT_GRACE_S)
        pc.shutdown()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(guard)
        try:
            await pool.call(pc, fn)
        finally:
            nursery.cancel_scope.cancel()


async def _execute_on(
    pool: LoginPool,
    pc: PooledConnection,
    req: ExecRequest,
    sink: Sink,
    cancel: CancelToken,
    deadline: float,
    outcome: ResultTotals,
) -> None:
    reader = _Reader(req)
    reused = pc.used
    pc.used = True
    # the run's watchdog stops the query on cancel or deadline (connector/_watchdog.py)
    watch = Watch(pc, cancel, deadline)
    done = watch.done  # set once no database work is left (the watchdog stops interrupting)
    failure: list[BaseException] = []
    max_rows = req.max_rows if req.max_rows is not None else math.inf

    def stopped() -> QueryFailed:
        code = ErrorCode.QUERY_TIMEOUT if cancel.reason == "timeout" else ErrorCode.QUERY_CANCELLED
        what = (
            "timed out" if code == ErrorCode.QUERY_TIMEOUT else f"was cancelled ({cancel.reason})"
        )
        return QueryFailed(code, f"the query {what}", outcome=outcome)

    async def fetch(call: Callable[[], Awaitable[_Chunk]]) -> _Chunk | None:
        """One step of the reader (a worker-thread call, or `_begin_here`); None when it failed
        (the failure is recorded unless the query was cancelled, which says why itself)."""
        try:
            return await call()
        except _ResetFailed:
            pc.broken = True
            if not cancel.cancelled:
                failure.append(_StaleConnection())
        except _SessionSetupFailed as exc:
            pc.broken = True
            if not cancel.cancelled:
                failure.append(
                    QueryFailed(
                        ErrorCode.CONNECTOR_DATABASE_UNAVAILABLE,
                        "SQL Server refused to set up the session for the query; retry it",
                        outcome=outcome,
                        detail=describe_sql_error(exc.__cause__ or exc),
                    )
                )
        except (OSError, TimeoutError, tds_base.ClosedConnectionError, OpenSSLError) as exc:
            # before tds_base.Error: python-tds reports a server gone mid-statement as
            # ClosedConnectionError, which is no SQL error
            pc.broken = True
            if not cancel.cancelled:
                failure.append(
                    QueryFailed(
                        ErrorCode.CONNECTOR_DATABASE_UNAVAILABLE,
                        "the connection to SQL Server failed during the query; retry it",
                        outcome=outcome,
                        detail=describe_sql_error(exc),
                    )
                )
        except ParamError as exc:  # raised before anything of the request was sent
            failure.append(QueryFailed(ErrorCode.REQUEST_INVALID, str(exc), outcome=outcome))
        except tds_base.Error as exc:
            if not cancel.cancelled:
                failed = sql_error(exc, outcome, redact=pool.redact)
                pc.broken = pc.broken or failed.code != ErrorCode.SQL_ERROR
                failure.append(failed)
        except Exception:  # a bug (ours or python-tds's): fail this query, keep serving
            log.exception("query failed unexpectedly", extra={"query_id": req.query_id})
            pc.broken = True
            failure.append(
                QueryFailed(
                    ErrorCode.INTERNAL,
                    "the connector failed to run the query",
                    detail="an unexpected error; its traceback is logged",
                )
            )
        return None

    def more() -> bool:
        """Whether the database has more of the result to fetch."""
        return not reader.finished or reader.pending_columns is not None

    async def produce(send: trio.MemorySendChannel[_Chunk], fetched: int) -> None:
        """The rest of a result that did not end with its first chunk: fetch the next chunk
        while the consumer delivers this one."""
        async with send:
            try:
                while more() and fetched <= max_rows and not cancel.cancelled:
                    budget = int(min(max_rows + 1 - fetched, 1 << 30))
                    chunk = await fetch(
                        functools.partial(
                            pool.call, pc, functools.partial(reader.next_chunk, budget)
                        )
                    )
                    if chunk is None:
                        return
                    fetched += chunk[2]
                    await send.send(chunk)
            finally:
                done.set()

    delivery = watch.delivery  # the one in progress, for the watchdog
    too_large: QueryFailed | None = None

    async def consume(chunk: _Chunk) -> None:
        nonlocal too_large
        if too_large is not None or cancel.cancelled:
            return  # drain; the producer stops at its next check
        # the last chunk: no flush, DONE follows at once in the same message
        # (finished only turns True once no database fetch is left to wait for)
        flush = more()
        if not flush and _hold(sink, chunk, req, outcome, max_rows):
            return  # taken without waiting: no delivery for the watchdog to cancel
        try:
            with trio.CancelScope() as scope:
                delivery[:] = [scope]
                await _deliver(sink, *chunk, req, outcome, max_rows, flush=flush)
            delivery.clear()
        except QueryFailed as exc:
            too_large = exc
            cancel.cancel("result too large")
        except SinkClosed:
            cancel.cancel("stream closed")

    dog = watching(watch)
    try:
        first: _Chunk | None = None
        if cancel.cancelled:
            failure.append(stopped())
        else:
            # reset + session context + statement + first chunk: no worker-thread hop when the
            # answers are small, else one; fetch one row past max_rows so exceeding it is
            # detected, not truncated
            budget = int(min(max_rows + 1, 1 << 30))
            first = await fetch(functools.partial(_begin_here, pool, pc, reader, reused, budget))
        if first is None or not more():
            done.set()  # a small result (the common case): no producer, no channel
        if first is not None:
            await consume(first)
            if not done.is_set():
                if too_large is not None or cancel.cancelled or first[2] > max_rows:
                    done.set()
                else:
                    async with trio.open_nursery() as nursery:
                        send, receive = trio.open_memory_channel[_Chunk](2)
                        nursery.start_soon(produce, send, first[2])
                        async with receive:
                            async for chunk in receive:
                                await consume(chunk)
    finally:
        # no database work left: the watchdog lets go of the connection (a statement left
        # mid-result is stopped cleanly below)
        done.set()
        dog.remove(watch)
    if cancel.cancelled and not pc.broken and not reader.finished:
        try:
            with trio.CancelScope(shield=True):
                await _bounded_call(pool, pc, lambda conn: reader.cancel())
        except Exception:  # python-tds can trip over a half-read stream: discard, never reuse
            log.info("clean cancel failed; discarding the connection", exc_info=True)
            pc.broken = True
    outcome.rows_affected = reader.rows_affected
    if too_large is not None:
        raise too_large
    if failure:
        raise failure[0]  # QueryFailed, or _StaleConnection for execute() to retry
    if cancel.cancelled:
        raise stopped()


def _hold(
    sink: Sink, chunk: _Chunk, req: ExecRequest, outcome: ResultTotals, max_rows: float
) -> bool:
    """`_deliver` of a result's last chunk (``flush=False``) when it needs no waiting: no cap
    is exceeded and the sink holds it all (`Sink.hold`). False: nothing was done."""
    columns, rows, count = chunk
    if count and (
        outcome.rows + count > max_rows
        or (req.max_bytes is not None and outcome.bytes + len(rows) > req.max_bytes)
    ):
        return False
    if not sink.hold(columns, rows if count else b""):
        return False
    if columns is not None:
        outcome.result_sets += 1
    outcome.rows += count
    outcome.bytes += len(rows) if count else 0
    return True


async def _deliver(
    sink: Sink,
    columns: bytes | None,
    rows: bytes,
    count: int,
    req: ExecRequest,
    outcome: ResultTotals,
    max_rows: float,
    *,
    flush: bool,
) -> None:
    if columns is not None:
        outcome.result_sets += 1
        await sink.send_columns(columns, flush=flush and not count)
    if count:
        if outcome.rows + count > max_rows:
            # deliver the rows up to the cap, then the typed error: never a silent truncation
            allowed = int(max_rows - outcome.rows)
            if allowed > 0:
                cut = 0
                for _ in range(allowed):
                    cut = rows.index(b"\n", cut) + 1
                outcome.rows += allowed
                outcome.bytes += cut
                await sink.send_rows(rows[:cut])
            raise QueryFailed(
                ErrorCode.LIMITS_RESULT_TOO_LARGE,
                f"the result has more than {req.max_rows} rows (max_rows)",
                outcome=outcome,
            )
        if req.max_bytes is not None and outcome.bytes + len(rows) > req.max_bytes:
            raise QueryFailed(
                ErrorCode.LIMITS_RESULT_TOO_LARGE,
                f"the result exceeds {req.max_bytes} bytes (max_bytes)",
                outcome=outcome,
            )
        outcome.rows += count
        outcome.bytes += len(rows)
        await sink.send_rows(rows, flush=flush)
