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
from cryptography.hazmat.primitives.asymmetric import rsa

from tdslite.engine import User
from tdslite.server import FedAuthConfig, TdsServer, open_server
from tests.tdslite._tds_standin import StandinEngine

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


async def test_real_engine_with_jwks_url(
    tmp_path: Path, tds_users_file: Path, key: rsa.RSAPrivateKey
) -> None:
    """The full path with the real engine: JWKS fetched over HTTP (127.0.0.1), the token's
    preferred_username is the users-file login "ana@example.com" (read-only, no password)."""
    import http.server
    import threading

    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json"
        fedauth = FedAuthConfig(issuer=ISSUER, jwks=url, audience=AUDIENCE)
        async with open_server(
            db=tmp_path / "fed.sqlite", users=tds_users_file, fedauth=fedauth
        ) as server:

            def run() -> tuple[object, ...]:
                with (
                    pytds.connect(
                        server.host,
                        port=server.port,
                        access_token_callable=lambda: _token(key),
                        autocommit=True,
                        login_timeout=5,
                        timeout=5,
                    ) as conn,
                    conn.cursor() as cur,
                ):
                    cur.execute("SELECT SUSER_NAME() AS login, USER_NAME() AS db_user")
                    return tuple(cur.fetchone())

            row = await _in_thread(run)
            assert row == ("ana@example.com", "analyst")
            entry = server.statement_log.entries[-1]
            assert (entry["login"], entry["user"]) == ("ana@example.com", "analyst")
    finally:
        httpd.shutdown()
        httpd.server_close()
