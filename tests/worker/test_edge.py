"""Edge protections of the Worker: client-token checks, unknown paths, rate limits, replays."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time

import httpx
import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization

from edgetds.devidp import DevIdP, generate_key
from tests.support.worker_relay import WorkerRelay, open_worker_relay
from tests.worker.helpers import CONNECTORS, TUNNEL, bearer, ndjson, peer, query_url


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hostile_tokens(idp: DevIdP) -> dict[str, tuple[str | None, str]]:
    """case -> (token, expected error code)."""
    now = int(time.time())
    good = idp.mint(sub="eve")
    header, payload, _ = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    rs_key = idp.signing_key("RS256")
    public_pem = rs_key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    none_token = (
        b64(json.dumps({"alg": "none", "kid": rs_key.kid}).encode())
        + "."
        + b64(json.dumps(claims).encode())
        + "."
    )
    hs_input = (
        b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": rs_key.kid}).encode())
        + "."
        + b64(json.dumps(claims).encode())
    )
    hs_sig = hmac.new(public_pem, hs_input.encode(), hashlib.sha256).digest()
    hs_token = hs_input + "." + b64(hs_sig)
    tampered = (
        header
        + "."
        + b64(json.dumps({**claims, "sub": "admin"}).encode())
        + "."
        + good.split(".")[2]
    )
    stranger = generate_key("RS256", kid=rs_key.kid)
    return {
        "missing": (None, "auth.missing_token"),
        "expired": (idp.mint(sub="eve", expires_in=-120), "auth.expired"),
        "wrong_audience": (idp.mint(sub="eve", aud="someone-else"), "auth.wrong_audience"),
        "unknown_issuer": (
            jwt.encode({**claims, "iss": "https://evil.example"}, stranger.private_key, "RS256"),
            "auth.unknown_issuer",
        ),
        "alg_none": (none_token, "auth.invalid_token"),
        "hs256_with_public_key": (hs_token, "auth.invalid_token"),
        "tampered": (tampered, "auth.invalid_token"),
        "other_key_same_kid": (idp.mint(sub="eve", key=stranger), "auth.invalid_token"),
        "not_yet_valid": (
            idp.mint(sub="eve", extra_claims={"nbf": now + 600}),
            "auth.invalid_token",
        ),
        "over_16k": ("x" * 20_000, "auth.invalid_token"),
        "jku_elsewhere": (
            idp.mint(sub="eve", key=stranger, headers={"jku": "http://127.0.0.1:9/jwks"}),
            "auth.invalid_token",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "expired",
        "wrong_audience",
        "unknown_issuer",
        "alg_none",
        "hs256_with_public_key",
        "tampered",
        "other_key_same_kid",
        "not_yet_valid",
        "over_16k",
        "jku_elsewhere",
    ],
)
async def test_hostile_client_tokens_are_refused_and_never_reach_the_connector(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient, case: str
) -> None:
    token, code = hostile_tokens(idp)[case]
    headers = bearer(token) if token is not None else {}
    with trio.fail_after(20):
        async with peer(relay) as p:
            response = await client.post(
                query_url(relay), json={"sql": "select 1"}, headers=headers
            )
            assert response.status_code == 401, response.text
            assert response.json()["error"]["code"] == code
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert p.queries == []


async def test_megabyte_token_is_refused_by_the_runtime(relay: WorkerRelay) -> None:
    # workerd (like Cloudflare's edge) refuses oversized headers before the Worker runs. Raw
    # socket: the runtime may answer and close while the client is still sending the header.
    port = int(relay.handle.http_url.rsplit(":", 1)[1])
    head = (
        "POST /v1/tunnels/demo/query HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {'x' * 1_000_000}\r\nContent-Length: 2\r\n\r\n{{}}"
    ).encode()
    answer = b""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError):
                for at in range(0, len(head), 65536):
                    await stream.send_all(head[at : at + 65536])
            with contextlib.suppress(trio.BrokenResourceError):
                while chunk := await stream.receive_some(65536):
                    answer += chunk
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]


async def test_unknown_paths_are_404_without_work(
    relay: WorkerRelay, client: httpx.AsyncClient
) -> None:
    for path in ("/", "/wp-login.php", "/v1/tunnels/demo", "/v1/tunnels/demo/connect/x", "/v2/x"):
        response = await client.get(relay.handle.http_url + path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "request.invalid"


async def test_the_production_bundle_has_no_test_hooks(
    idp: DevIdP, client: httpx.AsyncClient
) -> None:
    async with open_worker_relay(
        tunnel=TUNNEL, connector_ids=CONNECTORS, issuer=idp.issuer, test_hooks=False
    ) as relay:
        for action in ("state", "abort"):
            response = await client.post(relay.hook_url(action))
            assert response.status_code == 404, action
            assert response.json()["error"]["code"] == "request.invalid"
        bundle = (relay.out_dir / "relay.js").read_text(encoding="utf-8")
    for marker in ("_test", "EDGETDS_TEST_HOOKS", "ctx.abort("):
        assert marker not in bundle, f"{marker!r} is in the production bundle"


async def test_unknown_tunnel_and_bad_bodies(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    token = idp.mint(sub="u")
    response = await client.post(query_url(relay, "nope"), json={"sql": "x"}, headers=bearer(token))
    assert (response.status_code, response.json()["error"]["code"]) == (404, "tunnel.unknown")
    bad_bodies = [
        b"not json",
        b'{"sql": "x", "query": "y"}',
        b'{"sql": ""}',
        b'{"sql": "x", "params": []}',
        b'{"sql": "x", "extra": 1}',
        b'{"sql": "x", "params": {"big": 9007199254740993}}',
        b'{"sql": "x", "max_rows": -1}',
    ]
    for body in bad_bodies:
        response = await client.post(query_url(relay), content=body, headers=bearer(token))
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == "request.invalid"
    # A declared length over the limit is refused before the body is read (raw socket: the
    # client sends only the head and the first bytes).
    port = int(relay.handle.http_url.rsplit(":", 1)[1])
    head = (
        f"POST /v1/tunnels/demo/query HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: 1100000\r\n\r\n"
    ).encode()
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(head + b'{"sql": "' + b"x" * 1000)
            answer = b""
            while b"request.too_large" not in answer:
                chunk = await stream.receive_some(65536)
                assert chunk, answer
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 413")


async def test_client_query_id_is_refused_when_replayed(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    token = idp.mint(sub="q")
    body = {"sql": "select 1", "query_id": "order-42-attempt"}
    with trio.fail_after(20):
        # No connector yet: not sent anywhere, so the same id may be retried.
        first = await client.post(query_url(relay), json=body, headers=bearer(token))
        assert first.status_code == 503
        async with peer(relay) as p:
            ok = await client.post(query_url(relay), json=body, headers=bearer(token))
            assert ok.status_code == 200
            assert ndjson(ok.text)[-1]["done"]["query_id"] == "order-42-attempt"
            again = await client.post(query_url(relay), json=body, headers=bearer(token))
            assert again.status_code == 409
            assert again.json()["error"]["code"] == "query.duplicate"
            assert len(p.queries) == 1


async def test_failed_authentications_are_rate_limited_per_address(idp: DevIdP) -> None:
    limits = {"auth_failures_per_second": 0.01, "auth_failure_burst": 3}
    async with (
        open_worker_relay(
            tunnel=TUNNEL, connector_ids=CONNECTORS, issuer=idp.issuer, limits=limits
        ) as relay,
        httpx.AsyncClient(timeout=10) as client,
    ):
        statuses = []
        for _ in range(5):
            response = await client.post(
                query_url(relay), json={"sql": "x"}, headers=bearer("garbage")
            )
            statuses.append(response.status_code)
        assert statuses == [401, 401, 401, 429, 429]
        assert response.json()["error"]["code"] == "limits.rate_limited"
        assert int(response.headers["retry-after"]) >= 1
        # Even a valid token is refused from that address until the bucket refills.
        response = await client.post(
            query_url(relay), json={"sql": "x"}, headers=bearer(idp.mint(sub="ok"))
        )
        assert response.status_code == 429
        status = await client.get(
            f"{relay.handle.http_url}/v1/tunnels/demo/status", headers=bearer("x")
        )
        assert status.status_code == 429


async def test_queries_are_rate_limited_per_identity(idp: DevIdP) -> None:
    limits = {"queries_per_second": 0.01, "query_burst": 2}
    async with (
        open_worker_relay(
            tunnel=TUNNEL, connector_ids=CONNECTORS, issuer=idp.issuer, limits=limits
        ) as relay,
        httpx.AsyncClient(timeout=10) as client,
    ):
        async with peer(relay):
            codes = []
            for _ in range(3):
                response = await client.post(
                    query_url(relay), json={"sql": "x"}, headers=bearer(idp.mint(sub="greedy"))
                )
                codes.append(response.status_code)
            assert codes == [200, 200, 429]
            assert response.json()["error"]["code"] == "limits.rate_limited"
            other = await client.post(
                query_url(relay), json={"sql": "x"}, headers=bearer(idp.mint(sub="polite"))
            )
            assert other.status_code == 200
