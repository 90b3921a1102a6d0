"""Error codes, close codes and the exception hierarchy of edgetds/1.

One registry for every failure a client, relay or connector can report (SPEC.md, "Error codes"),
the WebSocket close codes, and the HTTP status each error code maps to when it is reported before
any byte of a response body was streamed.

Exception hierarchy::

    Exception
    ├── ProtocolError            a frame sequence broke edgetds/1; the connection is unusable
    │   ├── LocalProtocolError   we misused the API (sent what the protocol forbids)
    │   └── RemoteProtocolError  the peer sent bytes that break the protocol
    └── AuthError                a token, hello, attestation or enrolment failed verification

Every exception carries ``error_code`` (an :class:`ErrorCode`, what to report) and ``close_code``
(a :class:`CloseCode`, how to close the WebSocket). Messages never contain SQL text, tokens or
parameter values: they are safe to show to the peer.
"""

from __future__ import annotations

import enum

__all__ = [
    "AuthError",
    "CloseCode",
    "ErrorCode",
    "REFUSALS",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "http_status",
]


class ErrorCode(enum.StrEnum):
    """The error-code registry (the ``code`` of every ``{"error": ...}`` record)."""

    #: The HTTP request body or a frame field is malformed.
    REQUEST_INVALID = "request.invalid"
    #: The HTTP request body exceeds the relay's limit.
    REQUEST_TOO_LARGE = "request.too_large"
    #: No ``Authorization: Bearer`` token was sent.
    AUTH_MISSING_TOKEN = "auth.missing_token"
    #: The token is malformed or its signature does not verify.
    AUTH_INVALID_TOKEN = "auth.invalid_token"
    #: The token expired (or is not valid yet).
    AUTH_EXPIRED = "auth.expired"
    #: The token's issuer (or key id) is not configured.
    AUTH_UNKNOWN_ISSUER = "auth.unknown_issuer"
    #: The token's audience is not this relay/tunnel.
    AUTH_WRONG_AUDIENCE = "auth.wrong_audience"
    #: A QUERY's relay attestation does not verify against the frame.
    AUTH_ATTESTATION_INVALID = "auth.attestation_invalid"
    #: A token id, nonce or query id was seen before.
    AUTH_REPLAY = "auth.replay"
    #: The relay refused the connector (bad connector token).
    AUTH_CONNECTOR_REJECTED = "auth.connector_rejected"
    #: The connector refused the relay (bad HELLO signature, nonce, tunnel).
    AUTH_RELAY_REJECTED = "auth.relay_rejected"
    #: An enrolment token is malformed, altered, for another tunnel, or not signed by this
    #: relay's current key (SPEC.md 8.7).
    ENROLL_INVALID_TOKEN = "enroll.invalid_token"
    #: An enrolment token expired (or is not valid yet).
    ENROLL_EXPIRED = "enroll.expired"
    #: An enrolment request's proof does not verify with the public key it enrols.
    ENROLL_INVALID_PROOF = "enroll.invalid_proof"
    #: An enrolment token was already used (a replay).
    ENROLL_USED = "enroll.used"
    #: This relay keeps no enrolled keys (the Python relay: no ``[relay] enrollment_file``).
    ENROLL_DISABLED = "enroll.disabled"
    #: Policy maps the identity to no role allowed to run this query.
    POLICY_DENIED = "policy.denied"
    #: The statement is not read-only and the role is read-only.
    POLICY_NOT_READ_ONLY = "policy.not_read_only"
    #: The named query does not exist.
    POLICY_UNKNOWN_QUERY = "policy.unknown_query"
    #: The read-only check of the statement did not finish within its time budget.
    POLICY_CHECK_TIMEOUT = "policy.check_timeout"
    #: The tunnel does not exist.
    TUNNEL_UNKNOWN = "tunnel.unknown"
    #: The tunnel exists but no connector is connected.
    TUNNEL_NO_CONNECTOR = "tunnel.no_connector"
    #: SQL Server raised an error (the record carries number, state, class).
    SQL_ERROR = "sql.error"
    #: The query ran longer than its timeout.
    QUERY_TIMEOUT = "query.timeout"
    #: The query was cancelled (CANCEL frame, client gone).
    QUERY_CANCELLED = "query.cancelled"
    #: A query with this query_id was already executed.
    QUERY_DUPLICATE = "query.duplicate"
    #: Too many queries in flight (per tunnel, identity or connector).
    LIMITS_TOO_MANY_QUERIES = "limits.too_many_queries"
    #: The caller exceeded its request rate.
    LIMITS_RATE_LIMITED = "limits.rate_limited"
    #: The result exceeds max_rows or a single record exceeds the frame limit.
    LIMITS_RESULT_TOO_LARGE = "limits.result_too_large"
    #: Too many open sessions (per identity, tunnel or connector).
    LIMITS_TOO_MANY_SESSIONS = "limits.too_many_sessions"
    #: No such session on this tunnel (never opened, or forgotten).
    SESSION_NOT_FOUND = "session.not_found"
    #: The session belongs to another identity.
    SESSION_WRONG_IDENTITY = "session.wrong_identity"
    #: The session has ended (committed, rolled back, expired, its connection lost, ...).
    SESSION_ENDED = "session.ended"
    #: Another operation of the session is still running.
    SESSION_BUSY = "session.busy"
    #: The relay is out of capacity.
    RELAY_OVERLOADED = "relay.overloaded"
    #: The connector is draining and takes no new queries.
    CONNECTOR_DRAINING = "connector.draining"
    #: The connector cannot reach SQL Server.
    CONNECTOR_DATABASE_UNAVAILABLE = "connector.database_unavailable"
    #: The relay <-> connector connection dropped before the query finished.
    TRANSPORT_LOST = "transport.lost"
    #: A peer broke edgetds/1.
    PROTOCOL_ERROR = "protocol.error"
    #: A bug or an unexpected failure; details are in the server's log only.
    INTERNAL = "internal"


class CloseCode(enum.IntEnum):
    """WebSocket close codes used by edgetds/1 (RFC 6455 section 7.4 plus the 4000 range)."""

    #: Orderly close after GOAWAY.
    NORMAL = 1000
    #: The endpoint is going away (shutdown, deploy, drain finished).
    GOING_AWAY = 1001
    #: The peer broke edgetds/1 (bad header, frame not allowed in this state, ...).
    PROTOCOL_ERROR = 1002
    #: A text message was received; edgetds/1 is binary-only.
    UNSUPPORTED_DATA = 1003
    #: A frame's declared payload length exceeds the negotiated max frame size.
    MESSAGE_TOO_BIG = 1009
    #: An unexpected failure inside the endpoint.
    INTERNAL_ERROR = 1011
    #: The relay is overloaded; reconnect later (with backoff).
    TRY_AGAIN_LATER = 1013
    #: Mutual authentication failed (connector token, relay HELLO).
    AUTH_FAILED = 4001
    #: A newer connection for the same connector replaced this one.
    REPLACED = 4002


_HTTP_STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.REQUEST_INVALID: 400,
    ErrorCode.REQUEST_TOO_LARGE: 413,
    ErrorCode.ENROLL_INVALID_TOKEN: 401,
    ErrorCode.ENROLL_EXPIRED: 401,
    ErrorCode.ENROLL_INVALID_PROOF: 400,
    ErrorCode.ENROLL_USED: 409,
    ErrorCode.ENROLL_DISABLED: 404,
    ErrorCode.POLICY_UNKNOWN_QUERY: 404,
    ErrorCode.POLICY_CHECK_TIMEOUT: 413,
    ErrorCode.TUNNEL_UNKNOWN: 404,
    ErrorCode.TUNNEL_NO_CONNECTOR: 503,
    ErrorCode.SQL_ERROR: 422,
    ErrorCode.QUERY_TIMEOUT: 504,
    ErrorCode.QUERY_CANCELLED: 409,
    ErrorCode.QUERY_DUPLICATE: 409,
    ErrorCode.SESSION_NOT_FOUND: 404,
    ErrorCode.SESSION_WRONG_IDENTITY: 403,
    ErrorCode.SESSION_ENDED: 410,
    ErrorCode.SESSION_BUSY: 409,
    ErrorCode.RELAY_OVERLOADED: 503,
    ErrorCode.CONNECTOR_DRAINING: 503,
    ErrorCode.CONNECTOR_DATABASE_UNAVAILABLE: 503,
    ErrorCode.TRANSPORT_LOST: 502,
    ErrorCode.PROTOCOL_ERROR: 502,
    ErrorCode.INTERNAL: 500,
}
_HTTP_STATUS_BY_PREFIX = {"auth.": 401, "policy.": 403, "limits.": 429}

#: The codes of a query refused before it reached the database: authentication, policy, a
#: malformed or duplicate request, too many queries or sessions, or a session operation that
#: cannot run (unknown, another identity's, ended, busy). Audit records and metrics count these
#: as refusals; every other code is an error of a query that was let through.
REFUSALS = frozenset(
    [code for code in ErrorCode if code.startswith(("auth.", "policy.", "request.", "session."))]
    + [
        ErrorCode.QUERY_DUPLICATE,
        ErrorCode.LIMITS_TOO_MANY_QUERIES,
        ErrorCode.LIMITS_TOO_MANY_SESSIONS,
    ]
)


def http_status(code: str) -> int:
    """The HTTP status for an error reported before any response byte was streamed.

    Args:
        code: an error code (an :class:`ErrorCode` or its string; unknown codes give 500).

    Returns:
        The status code from SPEC.md's registry.
    """
    try:
        return _HTTP_STATUS_BY_CODE[ErrorCode(code)]
    except (KeyError, ValueError):
        pass
    for prefix, status in _HTTP_STATUS_BY_PREFIX.items():
        if code.startswith(prefix):
            return status
    return 500


class ProtocolError(Exception):
    """Base class: a frame sequence that edgetds/1 forbids.

    Attributes:
        error_code: the error code to report (GOAWAY ``code``).
        close_code: the WebSocket close code to close with.
    """

    def __init__(
        self,
        message: str,
        *,
        error_code: ErrorCode = ErrorCode.PROTOCOL_ERROR,
        close_code: CloseCode = CloseCode.PROTOCOL_ERROR,
    ) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.close_code = close_code


class LocalProtocolError(ProtocolError):
    """This side tried to do something edgetds/1 forbids (a bug in the caller)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something edgetds/1 forbids; send GOAWAY and close with ``close_code``."""


class AuthError(Exception):
    """A connector token, relay HELLO, query attestation or enrolment failed verification.

    Attributes:
        error_code: the code to report (``auth.*``; for enrolment also ``enroll.*``,
            ``request.invalid`` and ``tunnel.unknown``).
        close_code: :attr:`CloseCode.AUTH_FAILED` (meaningful for handshake failures).
    """

    def __init__(self, message: str, *, error_code: ErrorCode) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.close_code = CloseCode.AUTH_FAILED
