"""Conformance: connector authentication and client-token failures, on both relays. Nothing
refused may reach the connector or the database."""

from __future__ import annotations

import time

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.exceptions import InvalidStatus
from websockets.trio.client import connect

from protocol import make_connector_token
from tests.support.conformance import Conformance


async def upgrade_status(conf: Conformance, token: str | None, tunnel: str = "demo") -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    url = f"{conf.relay.ws_url}/v1/tunnels/{tunnel}/connect"
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, subprotocols=["edgetds.v1"], additional_headers=headers):  # type: ignore[list-item]
            pass
    return info.value.response.status_code


def connector_token(conf: Conformance, connector_id: str = "conn-2", **kw: object) -> str:
    key = kw.pop("key", None) or conf.relay.connector_keys[connector_id]
    return make_connector_token(
        key,  # type: ignore[arg-type]
        connector_id=connector_id,
        tunnel=str(kw.pop("tunnel", "demo")),
        now=int(kw.pop("now", time.time())),  # type: ignore[call-overload]
    )


async def test_connector_auth_failures_are_refused_before_the_upgrade(conf: Conformance) -> None:
    with trio.fail_after(30):
        assert await upgrade_status(conf, None) == 401
        assert await upgrade_status(conf, "not-a-jwt") == 401
        wrong_key = connector_token(conf, key=Ed25519PrivateKey.generate())
        assert await upgrade_status(conf, wrong_key) == 401
        unknown = connector_token(conf, "conn-9", key=Ed25519PrivateKey.generate())
        assert await upgrade_status(conf, unknown) == 401
        expired = connector_token(conf, now=time.time() - 300)
        assert await upgrade_status(conf, expired) == 401
        other_tunnel = connector_token(conf, tunnel="elsewhere")
        assert await upgrade_status(conf, other_tunnel, tunnel="elsewhere") == 404
        # A token that was used once is refused the second time (jti replay).
        token = connector_token(conf)
        url = f"{conf.relay.ws_url}/v1/tunnels/demo/connect"
        headers = {"Authorization": f"Bearer {token}"}
        async with connect(url, subprotocols=["edgetds.v1"], additional_headers=headers) as ws:  # type: ignore[list-item]
            await ws.recv()  # HELLO
        assert await upgrade_status(conf, token) == 401
    # The real connector is still connected and serving.
    with trio.fail_after(20):
        resp = await conf.query("SELECT COUNT(*) AS c FROM notes")
    assert resp.rows == [[2]]


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("missing", "auth.missing_token"),
        ("garbage", "auth.invalid_token"),
        ("expired", "auth.expired"),
        ("wrong_audience", "auth.wrong_audience"),
        ("unknown_issuer", "auth.unknown_issuer"),
    ],
)
async def test_client_token_failures_never_reach_the_database(
    conf: Conformance, case: str, code: str
) -> None:
    import jwt

    from edgetds.devidp import generate_key

    stranger = generate_key("RS256")
    tokens: dict[str, str | None] = {
        "missing": None,
        "garbage": "abc.def.ghi",
        "expired": conf.token(expires_in=-300),
        "wrong_audience": conf.token(aud="not-edgetds"),
        "unknown_issuer": jwt.encode(
            {"iss": "https://evil.example", "sub": "x", "aud": "edgetds", "exp": 2**31},
            stranger.private_key,
            "RS256",
        ),
    }
    before = len(conf.db.statement_log.entries)
    url = f"{conf.relay.http_url}/v1/tunnels/demo/query"
    token = tokens[case]
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    with trio.fail_after(20):
        response = await conf.http.post(url, json={"sql": "SELECT 1 AS one"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert len(conf.db.statement_log.entries) == before
