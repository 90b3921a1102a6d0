"""[logins.NAME] auth = "ntlm" | "kerberos" | "entra": each method logs in through the connector's
pool (real python-tds against real tdslite) and runs a query; each way of failing names its step.

NTLM: tdslite's acceptor is pyspnego, checking against an NTLM credentials file. Kerberos: a real
MIT KDC in a temporary realm (tests/support/kdc.py), a client keytab, tdslite's service keytab.
Entra: azure-identity's ManagedIdentityCredential fetches a real signed token from the dev IdP's
managed identity endpoint; tdslite verifies it against the dev IdP's JWKS (FEDAUTH).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytds
import pytest
import trio

import tdslite
from connector.config import DatabaseConfig, EntraConfig, LoginConfig
from connector.pool import DatabaseUnavailable, LoginPool
from edgetds.devidp import JWKS_PATH, MSI_PATH, DevIdP
from tests.support.kdc import Realm, open_realm

AZURE_SQL = "https://database.windows.net/"
NTLM_PASSWORD = "Ntlm-Passw0rd!"

USERS = """
[users.sa]
password = "sa-pw"
role = "admin"
database_user = "dbo"

[users.'CORP\\svc_reports']
windows = true
role = "read-only"
database_user = "analyst"

[users.'svc_edgetds@EDGETDS.TEST']
windows = true
role = "read-only"
database_user = "analyst"

[users.'00000000-0000-0000-0000-00000000a11e']
role = "read-only"
database_user = "analyst"
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.fixture
def users(tmp_path: Path) -> Path:
    return _write(tmp_path / "users.toml", USERS)


@pytest.fixture
def ntlm_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # CORP\stranger has an NTLM credential but no login in the users file (18456)
    path = _write(
        tmp_path / "ntlm.users",
        f"CORP:svc_reports:{NTLM_PASSWORD}\nCORP:stranger:stranger-pw\n",
    )
    monkeypatch.setenv("NTLM_USER_FILE", str(path))  # restored after the test
    return path


def _pool(port: int, login: LoginConfig) -> LoginPool:
    db = DatabaseConfig(
        host="localhost" if login.auth == "kerberos" else "127.0.0.1",
        port=port,
        database="sample",
        logins={login.name: login},
        validate_host=False,
        login_timeout_s=5,
    )
    return LoginPool(db, login, query_timeout_s=10)


def _who_and_count(conn: Any) -> tuple[str, int]:
    with conn.cursor() as cursor:
        cursor.execute("SELECT SUSER_SNAME(), COUNT(*) FROM customers")
        who, count = cursor.fetchone()
    return str(who), int(count)


async def _query(pool: LoginPool) -> tuple[str, int]:
    try:
        async with pool.borrow() as pc:
            return await pool.call(pc, _who_and_count)
    finally:
        await pool.aclose()


async def _refused(pool: LoginPool) -> DatabaseUnavailable:
    try:
        with pytest.raises(DatabaseUnavailable) as info:
            async with pool.borrow():
                pass
    finally:
        await pool.aclose()
    return info.value


# -- NTLM -----------------------------------------------------------------------------------------


def _ntlm(user: str = "CORP\\svc_reports", password: str = NTLM_PASSWORD) -> LoginConfig:
    return LoginConfig("reports", user, password, pool_size=2, auth="ntlm")


async def test_ntlm_login_runs_a_query_as_the_windows_login(users: Path, ntlm_users: Path) -> None:
    sspi = tdslite.SspiConfig(ntlm_users=str(ntlm_users))
    with trio.fail_after(30):
        async with tdslite.open_server(users=users, seed="sample", sspi=sspi) as server:
            assert await _query(_pool(server.port, _ntlm())) == ("CORP\\svc_reports", 24)


async def test_ntlm_wrong_password_fails_at_step_sspi_and_is_never_logged(
    users: Path, ntlm_users: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sspi = tdslite.SspiConfig(ntlm_users=str(ntlm_users))
    with trio.fail_after(30), caplog.at_level(logging.DEBUG):
        async with tdslite.open_server(users=users, seed="sample", sspi=sspi) as server:
            error = await _refused(_pool(server.port, _ntlm(password="Wrong-Passw0rd!")))
    assert error.step == "SSPI"
    assert "SQL Server error 18452" in error.detail
    assert "(auth ntlm)" in error.detail
    assert "DOMAIN\\user" in error.hint
    assert "Wrong-Passw0rd!" not in caplog.text
    assert NTLM_PASSWORD not in caplog.text


async def test_ntlm_user_without_a_login_fails_with_18456(users: Path, ntlm_users: Path) -> None:
    sspi = tdslite.SspiConfig(ntlm_users=str(ntlm_users))
    with trio.fail_after(30):
        async with tdslite.open_server(users=users, seed="sample", sspi=sspi) as server:
            error = await _refused(_pool(server.port, _ntlm("CORP\\stranger", "stranger-pw")))
    assert error.step == "18456"
    assert "Login failed for user 'CORP\\stranger'" in error.detail
    assert "CREATE LOGIN [DOMAIN\\user] FROM WINDOWS" in error.hint


async def test_a_server_without_integrated_authentication_refuses_with_18452(
    users: Path,
) -> None:
    with trio.fail_after(30):
        async with tdslite.open_server(users=users, seed="sample") as server:
            error = await _refused(_pool(server.port, _ntlm()))
    assert error.step == "SSPI"
    assert "18452" in error.detail


# -- Kerberos -------------------------------------------------------------------------------------


@pytest.fixture
async def realm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Realm]:
    async with open_realm(tmp_path / "realm") as realm:
        for key, value in realm.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("KRB5_KTNAME", str(realm.service_keytab))  # restored after the test
        yield realm


def _kerberos(realm: Realm, **changes: str) -> LoginConfig:
    fields = {"user": realm.principal, "keytab": str(realm.client_keytab)}
    fields.update(changes)
    return LoginConfig(
        "etl",
        fields["user"],
        "",
        auth="kerberos",
        keytab=fields["keytab"],
        spn=fields.get("spn", "MSSQLSvc/localhost"),
    )


async def test_kerberos_login_with_a_keytab_runs_a_query(users: Path, realm: Realm) -> None:
    sspi = tdslite.SspiConfig(keytab=str(realm.service_keytab))
    with trio.fail_after(60):
        async with tdslite.open_server(users=users, seed="sample", sspi=sspi) as server:
            assert await _query(_pool(server.port, _kerberos(realm))) == (realm.principal, 24)
    # the ticket came from the KDC: it logged the AS and TGS exchanges for our principal
    kdc_log = realm.log.read_text()
    assert "AS_REQ" in kdc_log
    assert "TGS_REQ" in kdc_log
    assert realm.principal in kdc_log


async def test_kerberos_for_an_unknown_spn_fails_at_step_ticket(users: Path, realm: Realm) -> None:
    sspi = tdslite.SspiConfig(keytab=str(realm.service_keytab))
    with trio.fail_after(60):
        async with tdslite.open_server(users=users, seed="sample", sspi=sspi) as server:
            login = _kerberos(realm, spn="MSSQLSvc/sql01.corp.example.com:1433")
            error = await _refused(_pool(server.port, login))
    assert error.step == "ticket"
    assert "MSSQLSvc/sql01.corp.example.com:1433" in error.detail
    assert "not found in Kerberos database" in error.detail
    assert "SPN" in error.hint
    assert "keytab" in error.hint


async def test_kerberos_with_a_keytab_of_another_principal_fails_at_step_ticket(
    users: Path, realm: Realm
) -> None:
    with trio.fail_after(60):
        async with tdslite.open_server(users=users, seed="sample") as server:
            login = _kerberos(realm, user="someone.else@EDGETDS.TEST")
            error = await _refused(_pool(server.port, login))
    assert error.step == "ticket"
    assert "KRB5_CLIENT_KTNAME" in error.hint


async def test_kerberos_from_krb5_client_ktname_with_the_default_spn(
    users: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No keytab and no user in the config: the ticket comes from KRB5_CLIENT_KTNAME (how a gMSA
    keytab is usually handed over), for the SPN MSSQLSvc/HOST:PORT built from [database]."""
    directory = tmp_path / "realm"
    sspi = tdslite.SspiConfig(keytab=str(directory / "mssqlsvc.keytab"))
    with trio.fail_after(60):
        async with tdslite.open_server(users=users, seed="sample", sspi=sspi) as server:
            # the realm knows MSSQLSvc/localhost:PORT for this server's port
            async with open_realm(directory, service_ports=(server.port,)) as realm:
                for key, value in realm.env().items():
                    monkeypatch.setenv(key, value)
                monkeypatch.setenv("KRB5_KTNAME", str(realm.service_keytab))
                monkeypatch.setenv("KRB5_CLIENT_KTNAME", str(realm.client_keytab))
                login = LoginConfig("etl", "", "", auth="kerberos")
                assert await _query(_pool(server.port, login)) == (realm.principal, 24)
                assert f"MSSQLSvc/localhost:{server.port}@EDGETDS.TEST" in realm.log.read_text()


# -- Entra ID -------------------------------------------------------------------------------------


@pytest.fixture
def managed_identity(idp: DevIdP, monkeypatch: pytest.MonkeyPatch) -> DevIdP:
    """The App Service managed identity environment azure-identity reads, at the dev IdP."""
    monkeypatch.setenv("IDENTITY_ENDPOINT", idp.issuer + MSI_PATH)
    monkeypatch.setenv("IDENTITY_HEADER", idp.identity_header)
    return idp


def _fedauth(idp: DevIdP, audience: str = AZURE_SQL) -> tdslite.FedAuthConfig:
    return tdslite.FedAuthConfig(
        issuer=idp.issuer, jwks=idp.issuer + JWKS_PATH, audience=audience, login_claim="oid"
    )


def _entra(**changes: Any) -> LoginConfig:
    return LoginConfig("azure", "app", "", pool_size=4, auth="entra", entra=EntraConfig(**changes))


async def test_entra_managed_identity_login_runs_a_query_and_reuses_its_token(
    users: Path, managed_identity: DevIdP, caplog: pytest.LogCaptureFixture
) -> None:
    idp = managed_identity
    with trio.fail_after(30), caplog.at_level(logging.DEBUG):
        async with tdslite.open_server(users=users, seed="sample", fedauth=_fedauth(idp)) as server:
            pool = _pool(server.port, _entra())
            try:
                async with pool.borrow() as first, pool.borrow() as second:
                    assert await pool.call(first, _who_and_count) == (idp.managed_identity, 24)
                    assert await pool.call(second, _who_and_count) == (idp.managed_identity, 24)
                tokens = pool._tokens
                assert tokens is not None
                token = tokens._token
            finally:
                await pool.aclose()
    # two connections, one token (valid for an hour): the endpoint was asked once
    assert idp.requests[MSI_PATH] == 1
    assert token.count(".") == 2
    assert token not in caplog.text


async def test_entra_token_is_replaced_before_it_expires(
    users: Path, managed_identity: DevIdP
) -> None:
    idp = managed_identity
    idp.managed_identity_lifetime_s = 240  # inside refresh_before_s (300): each login fetches anew
    with trio.fail_after(30):
        async with tdslite.open_server(users=users, seed="sample", fedauth=_fedauth(idp)) as server:
            pool = _pool(server.port, _entra())
            try:
                async with pool.borrow() as first, pool.borrow() as second:
                    await pool.call(first, _who_and_count)
                    await pool.call(second, _who_and_count)
            finally:
                await pool.aclose()
    assert idp.requests[MSI_PATH] == 2


async def test_entra_token_for_another_audience_fails_with_18456(
    users: Path, managed_identity: DevIdP
) -> None:
    idp = managed_identity
    with trio.fail_after(30):
        async with tdslite.open_server(users=users, seed="sample", fedauth=_fedauth(idp)) as server:
            error = await _refused(_pool(server.port, _entra(scope="api://other-app/.default")))
    assert error.step == "18456"
    assert "token-identified principal" in error.detail
    assert "audience" in error.hint


async def test_entra_without_a_reachable_identity_endpoint_fails_at_step_token(
    users: Path, managed_identity: DevIdP, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-header")  # the endpoint answers 401
    with trio.fail_after(30):
        async with tdslite.open_server(users=users, seed="sample") as server:
            error = await _refused(_pool(server.port, _entra()))
    assert error.step == "token"
    assert "managed_identity" in error.detail
    assert "IDENTITY_ENDPOINT" in error.hint
    assert managed_identity.requests[MSI_PATH] >= 1


async def test_an_expired_token_is_refused_with_18456(users: Path, idp: DevIdP) -> None:
    """python-tds's access_token_callable with a token the dev IdP signed, expired 2 min ago."""
    expired = idp.mint(
        sub="x", aud=AZURE_SQL, expires_in=-120, extra_claims={"oid": idp.managed_identity}
    )
    with trio.fail_after(30):
        async with tdslite.open_server(users=users, seed="sample", fedauth=_fedauth(idp)) as server:

            def connect() -> None:
                pytds.connect(
                    dsn="127.0.0.1",
                    port=server.port,
                    database="sample",
                    access_token_callable=lambda: expired,
                    disable_connect_retry=True,
                    login_timeout=5,
                ).close()

            with pytest.raises(pytds.tds_base.OperationalError) as info:
                await trio.to_thread.run_sync(connect)
    assert info.value.msg_no == 18456
