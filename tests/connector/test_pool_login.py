"""connector/pool.py: a refused login is reported with SQL Server's own error (number and
message), never as "cannot reach SQL Server ...: TimeoutError", and is logged. That detail (login,
host, port, the server's answer) is the error's ``detail``, for the connector's log; its message,
which a client may see, names none of them."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import pytest
import trio

import tdslite
from connector.config import DatabaseConfig, LoginConfig
from connector.pool import LOGIN_REFUSED, UNREACHABLE, DatabaseUnavailable, LoginPool
from tdslite.server._packets import HEADER_SIZE, PacketType, encode_message, parse_header
from tdslite.server._prelogin import Encrypt, build_reply
from tdslite.server._tokens import Done, done, message
from tests.support.connector_keys import closed_port
from tests.support.connector_stack import TDSLITE_USERS

UNAVAILABLE = "Database 'sales' on server 'db1' is not currently available. Please retry."


def _pool(port: int, *, database: str = "", password: str = "reader-pw") -> LoginPool:
    db = DatabaseConfig(
        host="127.0.0.1",
        port=port,
        database=database,
        logins={"reader": LoginConfig("reader", "reader", password, pool_size=1)},
        validate_host=False,
        login_timeout_s=1,
    )
    return LoginPool(db, db.logins["reader"], query_timeout_s=5)


async def _refusal(pool: LoginPool, public: str) -> str:
    """The pool's refusal: its client-safe message must be ``public``; returns its detail."""
    try:
        with pytest.raises(DatabaseUnavailable) as info:
            async with pool.borrow():
                pass
    finally:
        await pool.aclose()
    assert str(info.value) == public
    return info.value.detail


@pytest.mark.parametrize(
    ("database", "password", "expected"),
    [
        (
            "nope",
            "reader-pw",
            '(SQL Server error 18456: Cannot open database "nope" requested by the login. '
            "The login failed. Login failed for user 'reader'.)",
        ),
        ("", "wrong", "(SQL Server error 18456: Login failed for user 'reader'.)"),
    ],
)
async def test_a_refused_login_names_sql_servers_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, database: str, password: str, expected: str
) -> None:
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    with trio.fail_after(20):
        async with tdslite.open_server(users=users) as server:
            pool = _pool(server.port, database=database, password=password)
            with caplog.at_level(logging.WARNING, logger="edgetds.connector.pool"):
                got = await _refusal(pool, LOGIN_REFUSED)
    assert got == f"login 'reader' to 127.0.0.1:{server.port} failed {expected}"
    assert [r.error for r in caplog.records] == [got]  # type: ignore[attr-defined]
    assert password not in caplog.text


async def _lone_error_server(stream: trio.SocketStream) -> None:
    """Answers LOGIN7 with one error that python-tds retries until its login timeout (as Azure
    SQL's 40613), then hangs up: the TimeoutError python-tds raises comes from that error."""
    async with stream:
        for answer in ("prelogin", "login"):
            data = b""
            while len(data) < HEADER_SIZE or len(data) < HEADER_SIZE + parse_header(data[:8])[2]:
                chunk = await stream.receive_some()
                if not chunk:
                    return
                data += chunk
            if answer == "prelogin":
                payload = build_reply(Encrypt.NOT_SUP, thread_id=1)
            else:
                payload = message(40613, UNAVAILABLE, severity=14) + done(Done.ERROR)
            await stream.send_all(encode_message(PacketType.REPLY, payload, packet_size=4096))


async def test_an_error_python_tds_retried_is_reported_not_the_timeout() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, _lone_error_server, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            got = await _refusal(_pool(port), LOGIN_REFUSED)
            nursery.cancel_scope.cancel()
    assert (
        got == f"login 'reader' to 127.0.0.1:{port} failed (SQL Server error 40613: {UNAVAILABLE})"
    )


async def test_an_unreachable_server_is_still_cannot_reach() -> None:
    with trio.fail_after(20):
        port = closed_port()
        got = await _refusal(_pool(port), UNREACHABLE)
    assert got.startswith(f"cannot reach SQL Server at 127.0.0.1:{port}: "), got


def test_redact_replaces_the_login_and_the_host_as_whole_names_only() -> None:
    pool = _pool(1433)
    text = (
        'The server principal "reader" is not able to access the database "sales"; '
        "server 127.0.0.1 (READER), table readers, 127.0.0.10"
    )
    assert pool.redact(text) == (
        'The server principal "<login>" is not able to access the database "sales"; '
        "server <server> (<login>), table readers, 127.0.0.10"
    )
