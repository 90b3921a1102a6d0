"""tdslite's integrated (Windows) authentication: the SSPI exchange of LOGIN7, pyspnego accepting
NTLM against a credentials file. Two independent clients: FreeTDS's tsql (its own NTLM code,
``-U DOMAIN\\user``) and python-tds with a pyspnego client context."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytds
import pytest
import spnego
import trio
from pytds.login import SpnegoAuth

import tdslite
from tdslite.engine import UsersFileError, load_users

USERS = """
[users.sa]
password = "sa-pw"
role = "admin"
database_user = "dbo"

[users.'CORP\\svc_reports']
windows = true
role = "read-only"
database_user = "analyst"
"""
PASSWORD = "Ntlm-Passw0rd!"


@pytest.fixture
async def server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tdslite.TdsServer]:
    users = tmp_path / "users.toml"
    users.write_text(USERS)
    ntlm = tmp_path / "ntlm.users"
    ntlm.write_text(f"CORP:svc_reports:{PASSWORD}\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(ntlm))  # restored after the test
    sspi = tdslite.SspiConfig(ntlm_users=str(ntlm))
    async with tdslite.open_server(users=users, seed="sample", sspi=sspi) as server:
        yield server


def _tsql(server: tdslite.TdsServer, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["tsql", "-H", server.host, "-p", str(server.port), "-U", "CORP\\svc_reports", "-P",
         password, "-D", "sample"],
        input="SELECT SUSER_SNAME(), COUNT(*) FROM customers\ngo\nexit\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "TDSVER": "7.4"},
    )  # fmt: skip


async def test_freetds_ntlm_login(server: tdslite.TdsServer) -> None:
    with trio.fail_after(60):
        done = await trio.to_thread.run_sync(_tsql, server, PASSWORD)
        assert "CORP\\svc_reports\t24" in done.stdout, done.stdout + done.stderr
        refused = await trio.to_thread.run_sync(_tsql, server, "not-it")
    assert "Msg 18452" in refused.stdout + refused.stderr
    assert "untrusted domain" in refused.stdout + refused.stderr


def _connect(server: tdslite.TdsServer, auth: object) -> pytds.Connection:
    return pytds.connect(
        server.host,
        port=server.port,
        database="sample",
        auth=auth,
        autocommit=True,
        login_timeout=5,
        disable_connect_retry=True,
    )


async def test_a_malformed_token_is_refused_and_the_server_serves_on(
    server: tdslite.TdsServer,
) -> None:
    class Garbage:
        def create_packet(self) -> bytes:
            return b"NTLMSSP\x00\x01 not really"

        def handle_next(self, packet: bytes) -> bytes | None:
            return b"junk"

        def close(self) -> None:
            pass

    with trio.fail_after(30):
        with pytest.raises(pytds.tds_base.OperationalError) as info:
            await trio.to_thread.run_sync(_connect, server, Garbage())
        assert info.value.msg_no == 18452
        good = SpnegoAuth("CORP\\svc_reports", PASSWORD, protocol="ntlm")
        conn = await trio.to_thread.run_sync(_connect, server, good)
        conn.close()


async def test_a_token_or_password_cannot_log_in_as_a_windows_login(
    server: tdslite.TdsServer,
) -> None:
    """A Windows login has no password: SQL authentication with its name fails with 18456."""

    def sql_login() -> None:
        pytds.connect(
            server.host,
            port=server.port,
            user="CORP\\svc_reports",
            password="",
            login_timeout=5,
            disable_connect_retry=True,
        ).close()

    with trio.fail_after(30), pytest.raises(pytds.tds_base.OperationalError) as info:
        await trio.to_thread.run_sync(sql_login)
    assert info.value.msg_no == 18456


def test_users_file_windows_key(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    path.write_text(USERS)
    assert load_users(path)["CORP\\svc_reports"].windows
    assert not load_users(path)["sa"].windows
    path.write_text('[users."CORP\\\\x"]\nwindows = true\npassword = "p"\nrole = "read-only"\n')
    with pytest.raises(UsersFileError, match=r"windows = true\) has no password"):
        load_users(path)
    path.write_text('[users.x]\nwindows = "yes"\nrole = "read-only"\n')
    with pytest.raises(UsersFileError, match="must be true or false"):
        load_users(path)


def test_pyspnego_negotiate_acceptor_takes_raw_ntlm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What tdslite's acceptor relies on: SQL Server clients send raw NTLM (not SPNEGO-wrapped)."""
    ntlm = tmp_path / "ntlm.users"
    ntlm.write_text(f"CORP:svc_reports:{PASSWORD}\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(ntlm))
    acceptor = tdslite.SspiConfig(ntlm_users=str(ntlm)).acceptor()
    client = spnego.client("CORP\\svc_reports", PASSWORD, protocol="ntlm")
    challenge = acceptor.step(client.step() or b"")
    assert acceptor.step(client.step(challenge) or b"") is None
    assert acceptor.complete
    assert acceptor.principal == "CORP\\svc_reports"
