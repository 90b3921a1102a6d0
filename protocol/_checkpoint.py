"""Signed audit checkpoints: the connector's audit-chain head, signed with its own key.

A checkpoint says "this connector's audit chain had reached record ``seq`` with head hash
``head`` at ``time``". The connector sends it in a CHECKPOINT frame (SPEC.md 5.2) every N records,
at least every M seconds and on shutdown; the relay keeps the latest per connector and serves it,
so ``edgetds audit verify --checkpoint`` can tell a log whose END was cut off (which still chains
correctly) from a complete one. The signature covers every member but ``"sig"``, so a stored
checkpoint is self-verifying wherever it travels: a relay cannot forge or move one forward, only
withhold it.

Time is passed in by the caller; failures of :func:`verify_checkpoint` are :class:`AuthError`
(``auth.invalid_token``), failures of :func:`check_checkpoint` are ``ValueError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._auth import _sign, _signature_ok
from ._errors import AuthError, ErrorCode
from ._frames import FrameType
from ._state import FRAME_CAPS

__all__ = [
    "CHECKPOINT_CAP",
    "CHECKPOINT_CONTEXT",
    "GENESIS",
    "MAX_CHECKPOINT",
    "check_checkpoint",
    "sign_checkpoint",
    "verify_checkpoint",
]

#: The capability both sides announce (HELLO and READY ``caps``) before CHECKPOINT may cross.
CHECKPOINT_CAP = FRAME_CAPS[FrameType.CHECKPOINT]
#: Signature context of a checkpoint.
CHECKPOINT_CONTEXT = b"edgetds/1 checkpoint\n"
#: The largest CHECKPOINT payload, bytes.
MAX_CHECKPOINT = 4096
#: The ``prev`` of a chain's first record, and the ``head`` of an empty chain.
GENESIS = "0" * 64

_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_INT = 2**53 - 1
_STRINGS = {"connector_id": (1, 128), "tunnel": (1, 128), "file": (0, 255), "sig": (1, 128)}


def check_checkpoint(obj: Mapping[str, Any]) -> None:
    """Check the members of a checkpoint object (not its signature).

    Raises:
        ValueError: a member is missing or out of range.
    """
    for name, (low, high) in _STRINGS.items():
        value = obj.get(name)
        if not isinstance(value, str) or not low <= len(value) <= high:
            raise ValueError(f'checkpoint "{name}" must be a string of {low}..{high} characters')
    for name in ("seq", "time"):
        value = obj.get(name)
        if type(value) is not int or not 0 <= value <= _MAX_INT:
            raise ValueError(f'checkpoint "{name}" must be an integer in [0, 2^53-1]')
    head = obj.get("head")
    if not isinstance(head, str) or not _HEX64.fullmatch(head):
        raise ValueError('checkpoint "head" must be 64 lowercase hex digits')
    if obj["seq"] == 0 and head != GENESIS:
        raise ValueError('checkpoint with "seq" 0 (an empty chain) must have the genesis "head"')


def sign_checkpoint(
    private_key: Ed25519PrivateKey,
    *,
    connector_id: str,
    tunnel: str,
    seq: int,
    head: str,
    file: str,
    now: int,
) -> dict[str, Any]:
    """The connector's signed checkpoint (send it as ``events.Checkpoint(fields=...)``).

    Args:
        private_key: the connector's Ed25519 key (the one its tokens are signed with).
        connector_id, tunnel: this connector's.
        seq: the seq of the last audit record written (0: none yet).
        head: that record's hash (GENESIS when ``seq`` is 0).
        file: the name of the audit file that record is in (no directory).
        now: unix seconds.

    Raises:
        ValueError: a member is out of range.
    """
    fields = {
        "connector_id": connector_id,
        "tunnel": tunnel,
        "seq": seq,
        "head": head,
        "file": file,
        "time": now,
    }
    signed = _sign(private_key, CHECKPOINT_CONTEXT, fields)
    check_checkpoint(signed)
    return signed


def verify_checkpoint(
    fields: Mapping[str, Any],
    keys: Sequence[Ed25519PublicKey],
    *,
    connector_id: str | None = None,
    tunnel: str | None = None,
) -> None:
    """Check a checkpoint's members and that one of ``keys`` signed it.

    Args:
        fields: the checkpoint object, ``"sig"`` included.
        keys: the connector's public key(s) (several during a key rotation).
        connector_id, tunnel: when given, the checkpoint must name them.

    Raises:
        AuthError: ``auth.invalid_token``, saying what failed.
    """
    try:
        check_checkpoint(fields)
    except ValueError as exc:
        raise AuthError(str(exc), error_code=ErrorCode.AUTH_INVALID_TOKEN) from None
    expected = {"connector_id": connector_id, "tunnel": tunnel}
    for name, value in expected.items():
        if value is not None and fields[name] != value:
            raise AuthError(
                f'checkpoint "{name}" is {fields[name]!r}, not {value!r}',
                error_code=ErrorCode.AUTH_INVALID_TOKEN,
            )
    if not any(_signature_ok(key, CHECKPOINT_CONTEXT, fields) for key in keys):
        raise AuthError(
            "checkpoint signature does not verify under the connector's public key"
            + (f" (tried {len(keys)} keys)" if len(keys) > 1 else ""),
            error_code=ErrorCode.AUTH_INVALID_TOKEN,
        )
