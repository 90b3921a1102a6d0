"""FEDAUTH: python-tds ``access_token_callable`` tokens, RS256-signed with a real key, verified by
tdslite against a JWKS file (issuer, audience, expiry) and mapped to a users-file login."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytds
import pytest
import trio
from _tds_standin import StandinEngine
from cryptography.hazmat.primitives.asymmetric import rsa

from tdslite.engine import User
from tdslite.server import FedAuthConfig, TdsServer, open_server

ISSUER = "https://idp.test/tenant"
AUDIENCE = "api://tdslite-test"
USERS = {"ana@example.com": User("ana@example.com", None, "read-only", "ana")}


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def fed_server(tmp_path: Path, key: rsa.RSAPrivateKey) -> AsyncIterator[TdsServer]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    fedauth = FedAuthConfig(issuer=ISSUER, jwks=str(jwks), audience=AUDIENCE)
    async with open_server(
        users=USERS,
        engine=StandinEngine(USERS),  # type: ignore[arg-type]
        fedauth=fedauth,
    ) as server:
        yield server


def _token(key: rsa.RSAPrivateKey, **claims: object) -> str:
    now = int(time.time())
    payload: dict[str, object] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now + 300,
        "iat": now,
        "preferred_username": "ana@example.com",
    }
    payload.update(claims)
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": "k1"})


def _rows(server: TdsServer, token: str) -> list[tuple[object, ...]]:
    with (
        pytds.connect(
            server.host,
            port=server.port,
            access_token_callable=lambda: token,
            autocommit=True,
            login_timeout=5,
            timeout=5,
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("ROWS 2")
        return [tuple(r) for r in cur.fetchall()]


async def _in_thread(fn, *args):  # type: ignore[no-untyped-def]
    with trio.fail_after(15):
        return await trio.to_thread.run_sync(fn, *args)


async def test_valid_token_logs_in_as_mapped_login(
    fed_server: TdsServer, key: rsa.RSAPrivateKey
) -> None:
    assert await _in_thread(_rows, fed_server, _token(key)) == [(0, "row 0"), (1, "row 1")]
    assert fed_server.statement_log.entries[-1]["login"] == "ana@example.com"


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "api://someone-else"},
        {"iss": "https://evil.test/"},
        {"exp": int(time.time()) - 3600},
        {"preferred_username": "mallory@example.com"},
    ],
    ids=["audience", "issuer", "expired", "unknown-login"],
)
async def test_bad_tokens_refused(
    fed_server: TdsServer, key: rsa.RSAPrivateKey, claims: dict[str, object]
) -> None:
    with pytest.raises(pytds.OperationalError) as err:
        await _in_thread(_rows, fed_server, _token(key, **claims))
    assert err.value.msg_no == 18456
    assert fed_server.statement_log.entries == []


async def test_token_signed_by_another_key_refused(fed_server: TdsServer) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(pytds.OperationalError) as err:
        await _in_thread(_rows, fed_server, _token(other))
    assert err.value.msg_no == 18456
