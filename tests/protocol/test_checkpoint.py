"""CHECKPOINT: the connector's signed audit-chain head (SPEC.md 5.2), with FIXED test keys."""

from __future__ import annotations

from typing import Any

import pytest

from protocol import (
    CHECKPOINT_CAP,
    GENESIS,
    MAX_CHECKPOINT,
    AuthError,
    ErrorCode,
    Frame,
    FrameType,
    LocalProtocolError,
    RemoteProtocolError,
    canonical_json,
    encode_frame,
    events,
    sign_checkpoint,
    verify_checkpoint,
)
from protocol._codec import decode
from tests.protocol.helpers import (
    CONNECTOR_ID,
    CONNECTOR_KEY,
    NOW,
    OTHER_KEY,
    TUNNEL,
    ProtocolPair,
    hello_fields,
)

HEAD = "ab" * 32


def checkpoint(**changes: Any) -> dict[str, Any]:
    fields = {"connector_id": CONNECTOR_ID, "tunnel": TUNNEL, "seq": 42, "head": HEAD}
    fields.update(file="audit.jsonl", now=NOW)
    fields.update(changes)
    return sign_checkpoint(CONNECTOR_KEY, **fields)


def test_sign_and_verify() -> None:
    fields = checkpoint()
    assert set(fields) == {"connector_id", "tunnel", "seq", "head", "file", "time", "sig"}
    verify_checkpoint(
        fields, [CONNECTOR_KEY.public_key()], connector_id=CONNECTOR_ID, tunnel=TUNNEL
    )
    # any of a rotation's keys may have signed it
    verify_checkpoint(fields, [OTHER_KEY.public_key(), CONNECTOR_KEY.public_key()])
    event = events.Checkpoint(fields)
    assert (event.connector_id, event.seq, event.head) == (CONNECTOR_ID, 42, HEAD)


def test_an_empty_chain_has_the_genesis_head() -> None:
    verify_checkpoint(checkpoint(seq=0, head=GENESIS), [CONNECTOR_KEY.public_key()])
    with pytest.raises(ValueError, match="genesis"):
        checkpoint(seq=0)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"seq": 43}, "does not verify"),  # moved forward after signing
        ({"head": "cd" * 32}, "does not verify"),
        ({"sig": "!!"}, "does not verify"),
        ({"connector_id": "someone-else"}, '"connector_id"'),
        ({"tunnel": "other"}, '"tunnel"'),
        ({"seq": -1}, '"seq"'),
        ({"seq": 2**53}, '"seq"'),
        ({"seq": True}, '"seq"'),
        ({"time": 1.5}, '"time"'),
        ({"head": "AB" * 32}, '"head"'),
        ({"head": None}, '"head"'),
        ({"file": "x" * 256}, '"file"'),
        ({"connector_id": ""}, '"connector_id"'),
        ({"sig": None}, '"sig"'),
    ],
)
def test_tampered_or_malformed_checkpoints_are_refused(changes: dict[str, Any], match: str) -> None:
    fields = {**checkpoint(), **changes}
    with pytest.raises(AuthError, match=match) as info:
        verify_checkpoint(
            fields, [CONNECTOR_KEY.public_key()], connector_id=CONNECTOR_ID, tunnel=TUNNEL
        )
    assert info.value.error_code is ErrorCode.AUTH_INVALID_TOKEN


def test_wrong_key_names_how_many_keys_were_tried() -> None:
    with pytest.raises(AuthError, match="does not verify under"):
        verify_checkpoint(checkpoint(), [OTHER_KEY.public_key()])
    with pytest.raises(AuthError, match="tried 2 keys"):
        verify_checkpoint(checkpoint(), [OTHER_KEY.public_key(), OTHER_KEY.public_key()])


def test_payload_size_limit() -> None:
    padded = {**checkpoint(), "pad": "x" * MAX_CHECKPOINT}
    with pytest.raises(ValueError, match=f"at most {MAX_CHECKPOINT} bytes"):
        decode(Frame(FrameType.CHECKPOINT, 0, canonical_json(padded)))


def negotiated(caps: tuple[str, ...] = (CHECKPOINT_CAP,)) -> ProtocolPair:
    pair = ProtocolPair()
    pair.handshake(caps=caps)
    return pair


def test_checkpoint_crosses_when_both_sides_announced_the_capability() -> None:
    pair = negotiated()
    assert pair.relay.caps == frozenset({CHECKPOINT_CAP})
    sent = events.Checkpoint(checkpoint())
    assert pair.send(pair.connector, sent) == [sent]
    byte_by_byte = negotiated()
    byte_by_byte.byte_by_byte = True
    assert byte_by_byte.send(byte_by_byte.connector, sent) == [sent]


def test_checkpoint_without_the_capability_is_refused_both_ways() -> None:
    pair = negotiated(caps=())
    with pytest.raises(LocalProtocolError, match="capability"):
        pair.connector.send(events.Checkpoint(checkpoint()))
    pair = negotiated(caps=())
    frame = encode_frame(Frame(FrameType.CHECKPOINT, 0, canonical_json(checkpoint())))
    with pytest.raises(RemoteProtocolError, match="capability"):
        pair.relay.receive_data(frame)


def test_checkpoint_rules_for_role_scope_and_state() -> None:
    pair = negotiated()
    with pytest.raises(LocalProtocolError, match="may not be sent by the relay"):
        pair.relay.send(events.Checkpoint(checkpoint()))
    pair = negotiated()
    on_stream = encode_frame(Frame(FrameType.CHECKPOINT, 1, canonical_json(checkpoint())))
    with pytest.raises(RemoteProtocolError, match="stream 0"):
        pair.relay.receive_data(on_stream)
    before_ready = ProtocolPair()
    before_ready.send(before_ready.relay, events.Hello(hello_fields()))
    with pytest.raises(LocalProtocolError, match="not allowed in state"):
        before_ready.connector.send(events.Checkpoint(checkpoint()))
