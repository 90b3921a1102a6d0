"""edgetds/1, sans-I/O: the wire protocol between the relay and the connector (see SPEC.md).

Bytes in, events out, for either role; no sockets, no clock, no threads. The frame header codec,
the event classes, the state machine, credit-based flow control, and the Ed25519 helpers for the
connector token, the relay HELLO, query attestations and one-token enrolment. Also
`FairAdmission`, the admission rule both relays and the connector apply to queries (SPEC.md 11.4).
"""

from __future__ import annotations

from . import events
from ._admission import AdmissionStatistics, FairAdmission, Refusal
from ._auth import (
    ATTESTATION_MAX_SKEW,
    TOKEN_LEEWAY,
    TOKEN_MAX_LIFETIME,
    ConnectorClaims,
    ReplayCache,
    b64url,
    key_id,
    make_attestation,
    make_connector_token,
    raw_public_key,
    sign_hello,
    verify_attestation,
    verify_connector_token,
    verify_hello,
)
from ._checkpoint import (
    CHECKPOINT_CAP,
    GENESIS,
    MAX_CHECKPOINT,
    check_checkpoint,
    sign_checkpoint,
    verify_checkpoint,
)
from ._connection import Connection
from ._enroll import (
    ENROLL_DEFAULT_LIFETIME,
    ENROLL_LEEWAY,
    ENROLL_MAX_LIFETIME,
    ENROLL_TOKEN_PREFIX,
    EnrollClaims,
    EnrollRequest,
    check_enroll_request,
    check_enroll_time,
    make_enroll_request,
    make_enroll_token,
    parse_enroll_token,
    parse_public_key_text,
    public_key_text,
    sign_enrolled,
    verify_enrolled,
)
from ._errors import (
    REFUSALS,
    AuthError,
    CloseCode,
    ErrorCode,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    http_status,
)
from ._flow import (
    DEFAULT_FRAME,
    DEFAULT_STATEMENT_BYTES,
    MAX_FRAME_HARD,
    MAX_WINDOW,
    MIN_FRAME,
    Limits,
)
from ._frames import HEADER_SIZE, VERSION, Frame, FrameReader, FrameType, encode_frame, parse_frame
from ._json import canonical_json, loads_object
from ._records import (
    ErrorRecord,
    done_record,
    error_record,
    ndjson_line,
    param_type,
    parse_error_record,
)
from ._registry import wire_registry
from ._sessions import (
    ISOLATION_LEVELS,
    SESSION_CAP,
    SessionEnd,
    SessionOp,
    check_session,
    new_session_id,
)
from ._sqltypes import SQL_TYPE_TABLE, SQL_TYPES, SqlArgs, SqlFamily, SqlType
from ._state import ConnectionState, Role, StreamState

#: The WebSocket subprotocol of edgetds/1.
SUBPROTOCOL = "edgetds.v1"

#: The version of the edgetds distribution, which every package in it shares (pyproject.toml):
#: `edgetds --version` and the connector's info metric report it. It lives here, in the package
#: every other one may import, so that no package imports the CLI's package for it.
__version__ = "0.1.0"

__all__ = [
    "AdmissionStatistics",
    "FairAdmission",
    "Refusal",
    "ATTESTATION_MAX_SKEW",
    "CHECKPOINT_CAP",
    "DEFAULT_FRAME",
    "DEFAULT_STATEMENT_BYTES",
    "ENROLL_DEFAULT_LIFETIME",
    "ENROLL_LEEWAY",
    "ENROLL_MAX_LIFETIME",
    "ENROLL_TOKEN_PREFIX",
    "GENESIS",
    "HEADER_SIZE",
    "ISOLATION_LEVELS",
    "MAX_CHECKPOINT",
    "MAX_FRAME_HARD",
    "MAX_WINDOW",
    "MIN_FRAME",
    "REFUSALS",
    "SESSION_CAP",
    "SQL_TYPE_TABLE",
    "SQL_TYPES",
    "SUBPROTOCOL",
    "TOKEN_LEEWAY",
    "TOKEN_MAX_LIFETIME",
    "VERSION",
    "AuthError",
    "CloseCode",
    "Connection",
    "ConnectionState",
    "ConnectorClaims",
    "EnrollClaims",
    "EnrollRequest",
    "ErrorCode",
    "ErrorRecord",
    "Frame",
    "FrameReader",
    "FrameType",
    "Limits",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "ReplayCache",
    "Role",
    "SessionEnd",
    "SessionOp",
    "SqlArgs",
    "SqlFamily",
    "SqlType",
    "StreamState",
    "canonical_json",
    "check_checkpoint",
    "check_enroll_request",
    "check_enroll_time",
    "check_session",
    "done_record",
    "encode_frame",
    "error_record",
    "events",
    "http_status",
    "loads_object",
    "b64url",
    "key_id",
    "make_attestation",
    "make_connector_token",
    "make_enroll_request",
    "make_enroll_token",
    "parse_enroll_token",
    "parse_public_key_text",
    "public_key_text",
    "sign_enrolled",
    "verify_enrolled",
    "new_session_id",
    "raw_public_key",
    "ndjson_line",
    "param_type",
    "parse_error_record",
    "parse_frame",
    "sign_checkpoint",
    "sign_hello",
    "verify_attestation",
    "verify_checkpoint",
    "verify_connector_token",
    "verify_hello",
    "wire_registry",
]
