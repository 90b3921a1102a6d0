"""auth = "entra" with an app registration's credential: client secret, certificate, workload
identity (federated token file). azure-identity (MSAL) runs Entra ID's client credentials flow
against the dev IdP over https (a trustme CA; ``authority_host`` = the dev IdP), the connector's
pool logs in to tdslite with the token, and tdslite verifies it (FEDAUTH, audience
https://database.windows.net/)."""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

import tdslite
from connector.config import DatabaseConfig, EntraConfig, LoginConfig
from connector.pool import DatabaseUnavailable, LoginPool
from edgetds.devidp import FEDERATED_AUDIENCE, DevIdP, open_dev_idp

TENANT = "11111111-2222-3333-4444-555555555555"
SECRET = "app-secret-value-1"
USERS = "".join(
    f'[users.{app}]\nrole = "read-only"\ndatabase_user = "analyst"\n\n'
    for app in ("app-secret", "app-cert", "app-workload")
)


@pytest.fixture
async def https_idp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DevIdP]:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "idp.pem")
    )
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))  # azure-core's requests
    async with open_dev_idp(certfile=tmp_path / "idp.pem") as idp:
        yield idp


@pytest.fixture
async def server(tmp_path: Path, https_idp: DevIdP) -> AsyncIterator[tdslite.TdsServer]:
    users, jwks = tmp_path / "users.toml", tmp_path / "jwks.json"
    users.write_text(USERS)
    jwks.write_text(json.dumps(https_idp.jwks()))
    fedauth = tdslite.FedAuthConfig(
        issuer=https_idp.issuer,
        jwks=str(jwks),
        audience="https://database.windows.net/",
        login_claim="oid",
    )
    async with tdslite.open_server(users=users, seed="sample", fedauth=fedauth) as server:
        yield server


def _pool(server: tdslite.TdsServer, idp: DevIdP, **entra: str) -> LoginPool:
    config = EntraConfig(tenant_id=TENANT, authority_host=idp.issuer, **entra)  # type: ignore[arg-type]
    login = LoginConfig("azure", entra["client_id"], "", auth="entra", entra=config)
    db = DatabaseConfig(
        host="127.0.0.1", port=server.port, database="sample", logins={"azure": login}
    )
    return LoginPool(db, login, query_timeout_s=10)


def _who(conn: object) -> str:
    with conn.cursor() as cursor:  # type: ignore[attr-defined]
        cursor.execute("SELECT SUSER_SNAME() FROM customers WHERE id = 1")
        return str(cursor.fetchone()[0])


async def _login_name(pool: LoginPool) -> str:
    try:
        with trio.fail_after(60):
            async with pool.borrow() as pc:
                return await pool.call(pc, _who)
    finally:
        await pool.aclose()


async def test_client_secret(
    server: tdslite.TdsServer, https_idp: DevIdP, caplog: pytest.LogCaptureFixture
) -> None:
    https_idp.register_client("app-secret", secret=SECRET)
    with caplog.at_level(logging.DEBUG):
        pool = _pool(
            server,
            https_idp,
            credential="client_secret",
            client_id="app-secret",
            client_secret=SECRET,
        )
        assert await _login_name(pool) == "app-secret"
        wrong = _pool(
            server, https_idp, credential="client_secret", client_id="app-secret",
            client_secret="not-the-secret",
        )  # fmt: skip
        with pytest.raises(DatabaseUnavailable) as info:
            await _login_name(wrong)
    assert info.value.step == "token"
    assert "client_secret" in info.value.detail
    assert SECRET not in caplog.text
    assert "not-the-secret" not in caplog.text
    assert https_idp.requests[f"/{TENANT}/oauth2/v2.0/token"] == 2


async def test_certificate(server: tdslite.TdsServer, https_idp: DevIdP, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgetds-connector")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = tmp_path / "app-cert.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    https_idp.register_client("app-cert", public_key_pem=public)
    pool = _pool(
        server, https_idp, credential="certificate", client_id="app-cert",
        certificate_file=str(pem),
    )  # fmt: skip
    assert await _login_name(pool) == "app-cert"


async def test_workload_identity(
    server: tdslite.TdsServer, https_idp: DevIdP, tmp_path: Path
) -> None:
    subject = "system:serviceaccount:edge:connector"
    https_idp.register_client("app-workload", federated_subject=subject)
    token_file = tmp_path / "federated-token"
    token_file.write_text(https_idp.mint(sub=subject, aud=FEDERATED_AUDIENCE))
    pool = _pool(
        server, https_idp, credential="workload_identity", client_id="app-workload",
        federated_token_file=str(token_file),
    )  # fmt: skip
    assert await _login_name(pool) == "app-workload"
    # a federated token for another service account gets no token
    token_file.write_text(
        https_idp.mint(sub="system:serviceaccount:edge:other", aud=FEDERATED_AUDIENCE)
    )
    other = _pool(
        server, https_idp, credential="workload_identity", client_id="app-workload",
        federated_token_file=str(token_file),
    )  # fmt: skip
    with pytest.raises(DatabaseUnavailable) as info:
        await _login_name(other)
    assert info.value.step == "token"
