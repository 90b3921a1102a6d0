"""TLS inside PRELOGIN, as SQL Server does it, checked with python-tds (pyOpenSSL), stand-in engine.

Full encryption (client ON), login-only encryption (client OFF: only LOGIN7 inside TLS), a client
that trusts another CA is refused, and a client that demands encryption from a server without a
certificate gets a clear error.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytds
import pytest
import trio

from tdslite.engine import User
from tdslite.server import TdsServer, open_server
from tests.tdslite._tds_standin import StandinEngine

USERS = {"alice": User("alice", "pw-alice", "admin", "alice")}


@pytest.fixture
async def tls_server(tls_files: dict[str, str]) -> AsyncIterator[TdsServer]:
    engine = StandinEngine(USERS)
    async with open_server(
        users=USERS,
        engine=engine,  # type: ignore[arg-type]
        tls_cert=tls_files["cert"],
        tls_key=tls_files["key"],
    ) as server:
        yield server


def _query(server: TdsServer, **kw: object) -> list[tuple[object, ...]]:
    with (
        pytds.connect(
            "localhost",
            port=server.port,
            user="alice",
            password="pw-alice",
            autocommit=True,
            login_timeout=5,
            timeout=5,
            **kw,
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("ROWS 300")
        return [tuple(r) for r in cur.fetchall()]


async def _in_thread(fn, *args, **kw):  # type: ignore[no-untyped-def]
    with trio.fail_after(15):
        return await trio.to_thread.run_sync(lambda: fn(*args, **kw))


async def test_full_encryption_with_verified_certificate(
    tls_server: TdsServer, tls_files: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="tdslite.server"):
        rows = await _in_thread(_query, tls_server, cafile=tls_files["ca"], validate_host=True)
    assert len(rows) == 300
    assert rows[299] == (299, "row 299")
    assert "client=ON answer=ON" in caplog.text


async def test_login_only_encryption(
    tls_server: TdsServer, tls_files: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="tdslite.server"):
        rows = await _in_thread(_query, tls_server, cafile=tls_files["ca"], enc_login_only=True)
    assert len(rows) == 300
    assert "client=OFF answer=OFF" in caplog.text


async def test_plaintext_client_still_served(tls_server: TdsServer) -> None:
    assert len(await _in_thread(_query, tls_server)) == 300


async def test_wrong_ca_refused(tls_server: TdsServer, tls_files: dict[str, str]) -> None:
    with pytest.raises(Exception, match="certificate verify failed|SSL") as err:
        await _in_thread(_query, tls_server, cafile=tls_files["other_ca"], validate_host=True)
    assert "pw-alice" not in str(err.value)


async def test_encryption_required_but_no_certificate(tls_files: dict[str, str]) -> None:
    async with open_server(users=USERS, engine=StandinEngine(USERS)) as server:  # type: ignore[arg-type]
        with pytest.raises(pytds.Error, match="encryption but it is not supported"):
            await _in_thread(_query, server, cafile=tls_files["ca"])
