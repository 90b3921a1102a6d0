"""Connector authentication at the Worker: token checked before the upgrade, signed HELLO."""

from __future__ import annotations

import time

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.exceptions import InvalidStatus
from websockets.trio.client import connect

from protocol import AuthError, make_connector_token
from tests.support.protocol_peer import open_peer
from tests.support.worker_relay import WorkerRelay
from tests.worker.helpers import connect_url, peer


async def refused(url: str, token: str | None, *, subprotocol: str = "edgetds.v1") -> InvalidStatus:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, subprotocols=[subprotocol], additional_headers=headers):  # type: ignore[list-item]
            pass
    return info.value


def token_for(relay: WorkerRelay, connector_id: str = "conn-1", **options: object) -> str:
    key = options.pop("key", None) or relay.handle.connector_keys[connector_id]
    return make_connector_token(
        key,  # type: ignore[arg-type]
        connector_id=connector_id,
        tunnel=str(options.pop("tunnel", relay.handle.tunnel)),
        now=int(options.pop("now", time.time())),  # type: ignore[call-overload]
        **options,  # type: ignore[arg-type]
    )


async def test_hello_is_signed_and_status_counts_connector(
    relay: WorkerRelay, client: httpx.AsyncClient, idp
) -> None:
    with trio.fail_after(15):
        async with peer(relay) as p:
            # open_peer verified the HELLO signature against the pinned relay key.
            assert p.session_id
            status = await client.get(
                f"{relay.handle.http_url}/v1/tunnels/demo/status",
                headers={"Authorization": f"Bearer {idp.mint(sub='ops')}"},
            )
            assert status.status_code == 200
            body = status.json()
            assert (body["tunnel"], body["connectors"], body["connections"]) == ("demo", 1, 1)


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("wrong_key", "auth.invalid_token"),
        ("unknown_connector", "auth.unknown_issuer"),
        ("other_tunnel", "auth.wrong_audience"),
        ("expired", "auth.expired"),
        ("garbage", "auth.invalid_token"),
        ("missing", "auth.missing_token"),
    ],
)
async def test_bad_connector_token_is_refused_before_upgrade(
    relay: WorkerRelay, case: str, code: str
) -> None:
    tokens = {
        "wrong_key": lambda: token_for(relay, key=Ed25519PrivateKey.generate()),
        "unknown_connector": lambda: token_for(relay, "conn-9", key=Ed25519PrivateKey.generate()),
        "other_tunnel": lambda: token_for(relay, tunnel="other"),
        "expired": lambda: token_for(relay, now=time.time() - 120),
        "garbage": lambda: "not.a.jwt",
        "missing": lambda: None,
    }
    with trio.fail_after(10):
        exc = await refused(connect_url(relay), tokens[case]())
    assert exc.response.status_code == 401
    assert code.encode() in exc.response.body


async def test_replayed_connector_token_is_refused(relay: WorkerRelay) -> None:
    token = token_for(relay)
    h = relay.handle
    with trio.fail_after(15):
        async with open_peer(
            h.ws_url,
            h.tunnel,
            "conn-1",
            h.connector_keys["conn-1"],
            h.relay_public_key,
            token=token,
        ):
            pass
        exc = await refused(connect_url(relay), token)
    assert exc.response.status_code == 401
    assert b"auth.replay" in exc.response.body


async def test_hello_does_not_verify_against_another_relay_key(relay: WorkerRelay) -> None:
    h = relay.handle
    from tests.support.worker_relay import public_key_text

    other = public_key_text(Ed25519PrivateKey.generate())
    with trio.fail_after(10), pytest.raises(AuthError):
        async with open_peer(h.ws_url, h.tunnel, "conn-1", h.connector_keys["conn-1"], other):
            pass


async def test_upgrade_without_subprotocol_is_426(relay: WorkerRelay) -> None:
    with trio.fail_after(10):
        exc = await refused(connect_url(relay), token_for(relay), subprotocol="chat")
    assert exc.response.status_code == 426


async def test_unknown_tunnel_is_404(relay: WorkerRelay) -> None:
    with trio.fail_after(10):
        exc = await refused(connect_url(relay, "nope"), token_for(relay, tunnel="nope"))
    assert exc.response.status_code == 404
    assert b"tunnel.unknown" in exc.response.body
