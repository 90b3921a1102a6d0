"""Sessions: one transaction across several requests (SPEC.md section 7.4).

A session operation is a QUERY with a ``session`` member ``{"id", "op", ...}``. This module holds
the shape rules of that member (checked at framing, on both ends), the names both relays and the
connector share (ops, isolation levels, why a session ended) and the session id generator.
"""

from __future__ import annotations

import enum
import re
import secrets
from typing import Any

__all__ = [
    "ISOLATION_LEVELS",
    "SESSION_CAP",
    "SessionEnd",
    "SessionOp",
    "check_session",
    "new_session_id",
]

#: The capability (HELLO and READY ``caps``) that allows the QUERY member ``session``.
SESSION_CAP = "session"


class SessionOp(enum.StrEnum):
    """What a session operation does (the ``op`` member)."""

    #: Open the session: borrow a database connection, BEGIN TRANSACTION.
    BEGIN = "begin"
    #: Run one statement (``sql`` or ``query``) in the session's transaction.
    RUN = "run"
    #: COMMIT and end the session.
    COMMIT = "commit"
    #: ROLLBACK and end the session.
    ROLLBACK = "rollback"
    #: SAVE TRANSACTION ``name``.
    SAVEPOINT = "savepoint"
    #: ROLLBACK TRANSACTION ``name`` (to a savepoint; the session stays open).
    ROLLBACK_TO = "rollback_to"


class SessionEnd(enum.StrEnum):
    """Why a session ended (the ``reason`` of ``"session": {"state": "ended", ...}``)."""

    #: The client committed.
    COMMITTED = "committed"
    #: The client rolled back (``rollback`` or ``DELETE``).
    ROLLED_BACK = "rolled_back"
    #: COMMIT failed; the transaction was rolled back.
    COMMIT_FAILED = "commit_failed"
    #: SQL Server ended or doomed the transaction after a statement's error.
    ROLLED_BACK_BY_SERVER = "rolled_back_by_server"
    #: No operation for the idle timeout.
    IDLE_TIMEOUT = "idle_timeout"
    #: The maximum lifetime was reached.
    LIFETIME = "lifetime"
    #: The relay <-> connector connection the session was opened on was lost.
    TRANSPORT_LOST = "transport.lost"
    #: The connector drained (shut down) before the session ended.
    CONNECTOR_DRAINING = "connector.draining"
    #: The connector lost its database connection.
    DATABASE_UNAVAILABLE = "connector.database_unavailable"


#: ``SET TRANSACTION ISOLATION LEVEL`` values a ``begin`` may ask for (default: read committed).
ISOLATION_LEVELS = (
    "read uncommitted",
    "read committed",
    "repeatable read",
    "snapshot",
    "serializable",
)

_OPS = {op.value: op for op in SessionOp}
_ID = re.compile(r"[A-Za-z0-9_-]{22}\Z")
_SAVEPOINT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}\Z")
_OPTIONAL: dict[SessionOp, frozenset[str]] = {
    SessionOp.BEGIN: frozenset({"isolation", "role", "idle_timeout_ms"}),
}
_REQUIRED: dict[SessionOp, frozenset[str]] = {
    SessionOp.SAVEPOINT: frozenset({"name"}),
    SessionOp.ROLLBACK_TO: frozenset({"name"}),
}


def new_session_id() -> str:
    """A fresh session id: 128 random bits, 22 base64url characters."""
    return secrets.token_urlsafe(16)


def check_session(session: Any, *, has_statement: bool) -> SessionOp:
    """Check a QUERY's ``session`` member (SPEC.md 7.4) and return its op.

    Args:
        session: the member as parsed from JSON.
        has_statement: whether the QUERY has ``sql`` or ``query`` (``run`` needs one, the other
            ops none).

    Raises:
        ValueError: the member breaks a rule (a protocol error at framing).
    """
    if not isinstance(session, dict):
        raise ValueError('"session" must be an object')
    sid, op = session.get("id"), session.get("op")
    if not isinstance(sid, str) or not _ID.match(sid):
        raise ValueError('"session.id" must be 22 base64url characters')
    if not isinstance(op, str) or op not in _OPS:
        raise ValueError('"session.op" must be one of ' + ", ".join(SessionOp))
    kind = _OPS[op]
    required = _REQUIRED.get(kind, frozenset())
    allowed = {"id", "op"} | required | _OPTIONAL.get(kind, frozenset())
    if extra := sorted(set(session) - allowed):
        raise ValueError(f'"session" member {extra[0]!r} is not allowed with op {kind.value!r}')
    if missing := sorted(required - set(session)):
        raise ValueError(f'"session" op {kind.value!r} needs the member {missing[0]!r}')
    if "name" in session and not (
        isinstance(session["name"], str) and _SAVEPOINT.match(session["name"])
    ):
        raise ValueError('"session.name" must be 1..32 characters of [A-Za-z_][A-Za-z0-9_]*')
    if "isolation" in session and session["isolation"] not in ISOLATION_LEVELS:
        raise ValueError('"session.isolation" must be one of ' + ", ".join(ISOLATION_LEVELS))
    if "role" in session and not (isinstance(session["role"], str) and session["role"]):
        raise ValueError('"session.role" must be a non-empty string')
    timeout = session.get("idle_timeout_ms", 1)
    if type(timeout) is not int or not 1 <= timeout <= 2**31 - 1:
        raise ValueError('"session.idle_timeout_ms" must be an integer in 1..2^31-1')
    if has_statement != (kind is SessionOp.RUN):
        raise ValueError(
            'a session "run" needs exactly one of "sql" and "query"; other ops have neither'
        )
    return kind
