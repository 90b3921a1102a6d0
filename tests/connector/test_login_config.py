"""[logins.NAME] auth: each method's keys are checked and located, secret files follow the
password_file rule (owner-only), and the login check (diag's sql_login, the start-up check) names
each login's method and the failing step with its hint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

import tdslite
from connector.config import AZURE_SQL_SCOPE, ConfigError, ConnectorConfig, parse_config
from connector.diag import DiagReport, _check_sql
from connector.ops import Ops, watch_logins
from connector.pool import Pools
from identity.keys import generate_key_files
from tests.support.connector_stack import TDSLITE_USERS


def _doc(tmp_path: Path, logins: dict[str, Any], *, port: int = 1433) -> dict[str, Any]:
    key = generate_key_files(tmp_path, "k").private_path
    return {
        "connector": {
            "id": "c",
            "tunnel": "t",
            "relay_urls": ["wss://relay.example.com"],
            "private_key_file": str(key),
            "relay_public_keys": ["ed25519:ai-UyC5sVJnYzUXJ6M11gADPLuDl2SQObR9uxj2tPkQ"],
        },
        "database": {"host": "127.0.0.1", "port": port, "database": "sample"},
        "logins": logins,
        "issuers": [{"issuer": "https://id.example.com", "audience": "a"}],
        "policy": {"roles": {}},
    }


def _parse(tmp_path: Path, logins: dict[str, Any], **env: str) -> ConnectorConfig:
    return parse_config(_doc(tmp_path, logins), file=tmp_path / "c.toml", env=env)


def _problems(tmp_path: Path, logins: dict[str, Any], **env: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        _parse(tmp_path, logins, **env)
    return {p.location: p.message for p in info.value.problems}


def _secret_file(path: Path, text: str = "secret-material", mode: int = 0o600) -> str:
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_auth_defaults_to_sql_and_each_method_loads(tmp_path: Path) -> None:
    keytab = _secret_file(tmp_path / "svc.keytab")
    cfg = _parse(
        tmp_path,
        {
            "plain": {"user": "reader", "password_env": "PW"},
            "win": {"auth": "ntlm", "user": "CORP\\svc", "password_env": "PW"},
            "krb": {"auth": "kerberos", "user": "svc@CORP.EXAMPLE.COM", "keytab": keytab},
            "gmsa": {"auth": "kerberos"},
            "mi": {"auth": "entra"},
            "app": {
                "auth": "entra",
                "credential": "client_secret",
                "client_id": "app-id",
                "tenant_id": "tenant-id",
                "client_secret_env": "SECRET",
            },
        },
        PW="pw",
        SECRET="app-secret",
    )
    logins = cfg.database.logins
    assert {name: login.auth for name, login in logins.items()} == {
        "plain": "sql",
        "win": "ntlm",
        "krb": "kerberos",
        "gmsa": "kerberos",
        "mi": "entra",
        "app": "entra",
    }
    assert logins["krb"].keytab == keytab
    assert logins["gmsa"].keytab == ""  # KRB5_CLIENT_KTNAME or the credential cache
    mi = logins["mi"].entra
    assert mi is not None
    assert (mi.credential, mi.scope, mi.refresh_before_s) == (
        "managed_identity",
        AZURE_SQL_SCOPE,
        300.0,
    )
    app = logins["app"].entra
    assert app is not None
    assert app.client_secret == "app-secret"
    assert "app-secret" not in repr(cfg)
    assert "pw" not in repr(logins["win"]).replace("password", "")


def test_each_methods_mistakes_are_located(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        {
            "a": {"auth": "windows", "user": "x"},
            "b": {"auth": "kerberos", "user": "svc@R", "password_env": "PW"},
            "c": {"auth": "ntlm", "user": "svc", "password_env": "PW"},
            "d": {"auth": "entra", "credential": "password"},
            "e": {"auth": "entra", "credential": "client_secret", "client_id": "i"},
            "f": {"auth": "kerberos", "spn": "sql01.corp.example.com"},
            "g": {"auth": "entra", "keytab": "x"},
        },
        PW="pw",
    )
    assert "use one of sql, ntlm, kerberos, entra" in problems["logins.a.auth"]
    assert "unknown key" in problems["logins.b.password_env"]
    assert "DOMAIN\\user" in problems["logins.c.user"]
    assert "managed_identity, workload_identity" in problems["logins.d.credential"]
    assert problems["logins.e.tenant_id"] == "missing (required)"
    assert "client secret" in problems["logins.e"]
    assert "MSSQLSvc/HOST:PORT" in problems["logins.f.spn"]
    assert "unknown key" in problems["logins.g.keytab"]


@pytest.mark.parametrize("mode", [0o644, 0o640])
def test_a_keytab_or_certificate_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    keytab = _secret_file(tmp_path / "svc.keytab", mode=mode)
    cert = _secret_file(tmp_path / "app.pem", mode=mode)
    secret = _secret_file(tmp_path / "secret.txt", "app-secret", mode=mode)
    problems = _problems(
        tmp_path,
        {
            "krb": {"auth": "kerberos", "user": "svc@R", "keytab": keytab},
            "cert": {
                "auth": "entra",
                "credential": "certificate",
                "client_id": "i",
                "tenant_id": "t",
                "certificate_file": cert,
            },
            "sec": {
                "auth": "entra",
                "credential": "client_secret",
                "client_id": "i",
                "tenant_id": "t",
                "client_secret_file": secret,
            },
        },
    )
    for location in ("logins.krb.keytab", "logins.cert.certificate_file"):
        assert f"(mode {mode:o}); run: chmod 600" in problems[location]
    assert f"(mode {mode:o}); run: chmod 600" in problems["logins.sec.client_secret_file"]
    assert "app-secret" not in str(problems)


async def test_login_check_names_method_step_and_hint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """diag's sql_login step and the start-up check, against tdslite: a working SQL login, an
    NTLM login with a wrong password (SSPI), and an Entra login whose token endpoint is not
    there (token)."""
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token")  # nothing listens
    monkeypatch.setenv("IDENTITY_HEADER", "h")
    users = tmp_path / "users.toml"
    users.write_text(
        TDSLITE_USERS + '\n[users."CORP\\\\svc"]\nwindows = true\nrole = "read-only"\n'
    )
    ntlm = tmp_path / "ntlm.users"
    ntlm.write_text("CORP:svc:the-right-one\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(ntlm))  # restored after the test
    logins = {
        "reader": {"user": "reader", "password_env": "PW"},
        "win": {"auth": "ntlm", "user": "CORP\\svc", "password_env": "WIN_PW"},
        "azure": {"auth": "entra"},
    }
    sspi = tdslite.SspiConfig(ntlm_users=str(ntlm))
    with trio.fail_after(60), caplog.at_level(logging.DEBUG):
        async with tdslite.open_server(users=users, seed="sample", sspi=sspi) as server:
            doc = _doc(tmp_path, logins, port=server.port)
            env = {"PW": "reader-pw", "WIN_PW": "not-the-password"}
            config = parse_config(doc, file=tmp_path / "c.toml", env=env)
            report = DiagReport("c", "t")
            await _check_sql(report, config)
            pools = Pools(config.database, query_timeout_s=5)
            ops = Ops(connector_id="c", tunnel="t")
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(
                        lambda task_status: watch_logins(
                            pools, ops, interval_s=0, task_status=task_status
                        )
                    )
            finally:
                await pools.aclose()
    steps = {s.target.split(" ")[0]: s for s in report.steps}
    assert steps["reader"].status == "ok"
    win, azure = steps["win"], steps["azure"]
    assert (win.status, azure.status) == ("fail", "fail")
    assert win.target.startswith("win (auth ntlm, CORP\\svc@127.0.0.1:")
    assert win.detail == "step SSPI: error 18452 (SSPI refused)"
    assert "DOMAIN\\user" in win.hint
    assert azure.detail.startswith("step token: no Entra ID token (managed_identity)")
    assert "IDENTITY_ENDPOINT" in azure.hint
    # the start-up check logs each failing login once, with its step and the step's hint
    failing = {r.login: r for r in caplog.records if r.getMessage().startswith("database login")}
    assert set(failing) == {"win", "azure"}
    assert "at step SSPI" in failing["win"].getMessage()
    assert failing["win"].hint == win.hint  # type: ignore[attr-defined]
    assert "at step token" in failing["azure"].getMessage()
    assert "not-the-password" not in caplog.text
    assert "not-the-password" not in report.as_text()
