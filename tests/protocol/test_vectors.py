"""Run every shared vector in protocol/vectors/ (the JavaScript Worker runs the same files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol import (
    AuthError,
    Frame,
    FrameReader,
    FrameType,
    Limits,
    ProtocolError,
    ReplayCache,
    canonical_json,
    check_enroll_request,
    check_enroll_time,
    key_id,
    parse_enroll_token,
    public_key_text,
    sign_enrolled,
    verify_attestation,
    verify_checkpoint,
    verify_connector_token,
    verify_enrolled,
    verify_hello,
)
from protocol._codec import decode, encode
from tests.protocol.gen_vectors import event_json, frame_json, parse, run_sequence

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"
FRAMES = json.loads((VECTORS / "frames.json").read_text(encoding="utf-8"))["vectors"]
SEQUENCES = json.loads((VECTORS / "sequences.json").read_text(encoding="utf-8"))["vectors"]
AUTH = json.loads((VECTORS / "auth.json").read_text(encoding="utf-8"))


def public_key(name: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(AUTH["keys"][name]["public_hex"]))


def test_counts() -> None:
    kinds = ("connector_tokens", "hellos", "attestations", "checkpoints")
    auth = [v for k in kinds for v in AUTH[k]]
    every = FRAMES + SEQUENCES + auth
    assert len(every) + len(AUTH["canonical_json"]) >= 40
    assert sum(not v["valid"] for v in every) >= 15
    names = [v["name"] for v in every]
    assert len(names) == len(set(names)), "vector names are unique"


@pytest.mark.parametrize("vector", FRAMES, ids=[v["name"] for v in FRAMES])
def test_frame_vector(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    if not vector["valid"]:
        with pytest.raises(ProtocolError) as info:
            parse(data, vector["max_frame"])
        assert str(info.value.error_code) == vector["error"]["code"]
        assert int(info.value.close_code) == vector["error"]["close_code"]
        return
    assert frame_json(data) == vector["frame"]
    event = parse(data, vector["max_frame"])
    assert event_json(event) == vector["decoded"]
    reader = FrameReader(max_payload=vector["max_frame"])  # byte by byte
    got = []
    for byte in data:
        reader.feed(bytes([byte]))
        if (frame := reader.next_frame()) is not None:
            got.append(frame)
    assert [event_json(decode(f)) for f in got] == [vector["decoded"]]
    assert encode(event) == Frame(
        FrameType[vector["frame"]["type"]], event_stream(event), data[12:]
    )


def event_stream(event: Any) -> int:
    return getattr(event, "stream_id", 0)  # type: ignore[no-any-return]


@pytest.mark.parametrize("vector", SEQUENCES, ids=[v["name"] for v in SEQUENCES])
def test_sequence_vector(vector: dict[str, Any]) -> None:
    limits = Limits(**vector["limits"])
    got = run_sequence(vector["role"], limits, vector["steps"])
    assert got == {"events": vector["events"], "credit": vector["credit"], "error": vector["error"]}
    assert vector["valid"] is (vector["error"] is None)


def test_keys_match_their_seeds() -> None:
    for entry in AUTH["keys"].values():
        key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(entry["seed_hex"]))
        raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        assert raw.hex() == entry["public_hex"]


@pytest.mark.parametrize("vector", AUTH["canonical_json"])
def test_canonical_json_vector(vector: dict[str, Any]) -> None:
    assert canonical_json(vector["value"]).hex() == vector["canonical_hex"]


def auth_outcome(verify: Any, uses: int) -> dict[str, Any]:
    for _ in range(uses - 1):
        verify()
    try:
        result = verify()
    except AuthError as exc:
        return {"valid": False, "error": str(exc.error_code)}
    return {"valid": True} if result is None else {"valid": True, "claims": vars_of(result)}


def vars_of(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


TOKENS = AUTH["connector_tokens"]


@pytest.mark.parametrize("vector", TOKENS, ids=[v["name"] for v in TOKENS])
def test_connector_token_vector(vector: dict[str, Any]) -> None:
    check = vector["verify"]
    cache = ReplayCache(60)
    keys = {
        AUTH["keys"]["connector"]["key_id"]: [public_key(name) for name in check["connector_keys"]]
    }

    def verify() -> Any:
        tunnel, now = check["tunnel"], check["now"]
        return verify_connector_token(vector["token"], keys, tunnel=tunnel, now=now, replay=cache)

    expected = {k: vector[k] for k in ("valid", "error", "claims") if k in vector}
    assert auth_outcome(verify, check["uses"]) == expected


HELLOS = AUTH["hellos"]


@pytest.mark.parametrize("vector", HELLOS, ids=[v["name"] for v in HELLOS])
def test_hello_vector(vector: dict[str, Any]) -> None:
    check = dict(vector["verify"])
    keys = {AUTH["keys"]["relay"]["key_id"]: public_key(check.pop("relay_key"))}
    fields = vector["fields"]
    unsigned = {k: v for k, v in fields.items() if k != "sig"}
    if vector["name"] == "hello-good":
        assert (b"edgetds/1 hello\n" + canonical_json(unsigned)).hex() == vector[
            "signing_input_hex"
        ]

    def verify() -> None:
        verify_hello(fields, keys, **check)

    expected = {k: vector[k] for k in ("valid", "error") if k in vector}
    assert auth_outcome(verify, 1) == expected


ATTESTATIONS = AUTH["attestations"]


@pytest.mark.parametrize("vector", ATTESTATIONS, ids=[v["name"] for v in ATTESTATIONS])
def test_attestation_vector(vector: dict[str, Any]) -> None:
    check = vector["verify"]
    query = decode(Frame(FrameType.QUERY, 1, canonical_json(vector["query"])))
    attestation = {k: v for k, v in vector["query"]["attestation"].items() if k != "sig"}
    assert (b"edgetds/1 query\n" + canonical_json(attestation)).hex() == vector["signing_input_hex"]
    keys = {AUTH["keys"]["relay"]["key_id"]: public_key(check["relay_key"])}
    cache = ReplayCache(120)

    def verify() -> None:
        session, now = check["session_id"], check["now"]
        verify_attestation(query, keys, session_id=session, now=now, replay=cache)  # type: ignore[arg-type]

    expected = {k: vector[k] for k in ("valid", "error") if k in vector}
    assert auth_outcome(verify, check["uses"]) == expected


CHECKPOINTS = AUTH["checkpoints"]


@pytest.mark.parametrize("vector", CHECKPOINTS, ids=[v["name"] for v in CHECKPOINTS])
def test_checkpoint_vector(vector: dict[str, Any]) -> None:
    check = vector["verify"]
    fields = vector["fields"]
    if vector["valid"]:
        unsigned = {k: v for k, v in fields.items() if k != "sig"}
        signing_input = b"edgetds/1 checkpoint\n" + canonical_json(unsigned)
        assert signing_input.hex() == vector["signing_input_hex"]
    keys = [public_key(name) for name in check["connector_keys"]]

    def verify() -> None:
        connector_id, tunnel = check["connector_id"], check["tunnel"]
        verify_checkpoint(fields, keys, connector_id=connector_id, tunnel=tunnel)

    expected = {k: vector[k] for k in ("valid", "error") if k in vector}
    assert auth_outcome(verify, 1) == expected


ENROLL = json.loads((VECTORS / "enroll.json").read_text(encoding="utf-8"))


def enroll_key(name: str) -> Ed25519PublicKey:
    return Ed25519PrivateKey.from_private_bytes(
        bytes.fromhex(ENROLL["keys"][name]["seed_hex"])
    ).public_key()


def enroll_outcome(check: Any) -> dict[str, Any]:
    try:
        check()
    except AuthError as exc:
        return {"valid": False, "error": str(exc.error_code)}
    return {"valid": True}


def test_enroll_keys_match_their_seeds() -> None:
    for name, entry in ENROLL["keys"].items():
        assert public_key_text(enroll_key(name)) == entry["public_key"]
        assert key_id(enroll_key(name)) == entry["key_id"]


@pytest.mark.parametrize("vector", ENROLL["tokens"], ids=[v["name"] for v in ENROLL["tokens"]])
def test_enroll_token_vector(vector: dict[str, Any]) -> None:
    def check() -> None:
        check_enroll_time(parse_enroll_token(vector["token"]), now=vector["now"])

    expected = {k: vector[k] for k in ("valid", "error") if k in vector}
    assert enroll_outcome(check) == expected
    if vector["valid"]:
        claims = parse_enroll_token(vector["token"])
        assert claims.as_json() == vector["claims"]
        signing_input = b"edgetds/1 enroll\n" + canonical_json(vector["claims"])
        assert signing_input.hex() == vector["signing_input_hex"]


REQUESTS = ENROLL["requests"]


@pytest.mark.parametrize("vector", REQUESTS, ids=[v["name"] for v in REQUESTS])
def test_enroll_request_vector(vector: dict[str, Any]) -> None:
    check = vector["verify"]

    def verify() -> Any:
        return check_enroll_request(
            vector["body_text"].encode(),
            tunnel=check["tunnel"],
            tunnels=check["tunnels"],
            relay_keys=[enroll_key(name) for name in check["relay_keys"]],
            now=check["now"],
            consumed=check["consumed"],
        )

    expected = {k: vector[k] for k in ("valid", "error") if k in vector}
    assert enroll_outcome(verify) == expected
    if vector["valid"]:
        relay = Ed25519PrivateKey.from_private_bytes(
            bytes.fromhex(ENROLL["keys"]["relay"]["seed_hex"])
        )
        assert sign_enrolled(relay, verify()) == vector["answer"]


ANSWERS = ENROLL["answers"]


@pytest.mark.parametrize("vector", ANSWERS, ids=[v["name"] for v in ANSWERS])
def test_enroll_answer_vector(vector: dict[str, Any]) -> None:
    def verify() -> None:
        verify_enrolled(vector["answer"], **vector["verify"])

    expected = {k: vector[k] for k in ("valid", "error") if k in vector}
    assert enroll_outcome(verify) == expected
    if vector["valid"]:
        signing_input = b"edgetds/1 enrolled\n" + canonical_json(vector["answer"]["enrolled"])
        assert signing_input.hex() == vector["signing_input_hex"]
