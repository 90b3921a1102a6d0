"""Wire-level tests of the TDS layer with python-tds over a stand-in engine (_tds_standin)."""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import AsyncIterator

import pytds
import pytest
import trio

from tdslite.engine import User
from tdslite.server import TdsServer, open_server
from tests.tdslite._tds_standin import StandinEngine

USERS = {"alice": User("alice", "pw-alice", "admin", "alice")}


@pytest.fixture
async def standin() -> AsyncIterator[tuple[TdsServer, StandinEngine]]:
    engine = StandinEngine(USERS)
    async with open_server(users=USERS, engine=engine) as server:  # type: ignore[arg-type]
        yield server, engine


def _connect(server: TdsServer, **kw: object) -> pytds.Connection:
    options: dict[str, object] = {"autocommit": True, "timeout": 5, **kw}
    return pytds.connect(
        server.host,
        port=server.port,
        user="alice",
        password="pw-alice",
        database="standin",
        login_timeout=5,
        **options,
    )


async def test_echo_every_type(standin: tuple[TdsServer, StandinEngine]) -> None:
    server, _ = standin
    values = [
        1,
        2**40,
        True,
        1.5,
        "héllo",
        decimal.Decimal("12345.6789"),
        decimal.Decimal("-0.01"),
        datetime.date(2024, 2, 29),
        datetime.time(13, 14, 15, 123456),
        datetime.datetime(2024, 5, 6, 7, 8, 9, 123456),
        datetime.datetime(
            2024,
            5,
            6,
            7,
            8,
            9,
            5,
            tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30)),
        ),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        pytds.Binary(b"\x00\x01\xff"),
        "x" * 5000,
    ]

    def run() -> tuple:
        with _connect(server) as conn, conn.cursor() as cur:
            cur.execute("ECHO " + ",".join(["%s"] * len(values)), values)
            return cur.fetchone()

    with trio.fail_after(10):
        row = await trio.to_thread.run_sync(run)
    expected = [bytes(v) if isinstance(v, pytds.Binary) else v for v in values]
    assert list(row) == expected


async def _in_thread(fn, *args):  # type: ignore[no-untyped-def]
    with trio.fail_after(15):
        return await trio.to_thread.run_sync(fn, *args)


async def test_rows_errors_nulls_counts(standin: tuple[TdsServer, StandinEngine]) -> None:
    server, _ = standin

    def run() -> dict[str, object]:
        out: dict[str, object] = {}
        with _connect(server) as conn, conn.cursor() as cur:
            cur.execute("ROWS 20000")
            rows = cur.fetchall()
            out["n"] = len(rows)
            out["last"] = tuple(rows[-1])
            cur.execute("NULLS")
            out["nulls"] = tuple(cur.fetchone())
            cur.execute("COUNT 7")
            out["count"] = cur.rowcount
            with pytest.raises(pytds.OperationalError) as err:
                cur.execute("FAIL 50123")
            out["err"] = (err.value.msg_no, err.value.state, err.value.severity)
            cur.execute("ROWS 2; ROWS 3")
            out["first"] = len(cur.fetchall())
            assert cur.nextset()
            out["second"] = len(cur.fetchall())
            cur.execute("ROWS 1")
            out["after"] = cur.fetchall()
        return out

    out = await _in_thread(run)
    assert out["n"] == 20000
    assert out["last"] == (19999, "row 19999")
    assert out["nulls"] == tuple(7 if i == 3 else None for i in range(20))
    assert out["count"] == 7
    assert out["err"] == (50123, 2, 16)
    assert (out["first"], out["second"]) == (2, 3)
    assert [tuple(r) for r in out["after"]] == [(0, "row 0")]


async def test_wrong_password(standin: tuple[TdsServer, StandinEngine]) -> None:
    server, _ = standin

    def run() -> None:
        pytds.connect(server.host, port=server.port, user="alice", password="nope", login_timeout=5)

    with pytest.raises(pytds.OperationalError) as err:
        await _in_thread(run)
    assert err.value.msg_no == 18456
    assert err.value.severity == 14


async def test_cancel_by_timeout_then_reuse(standin: tuple[TdsServer, StandinEngine]) -> None:
    server, _ = standin

    def run() -> list[tuple[object, ...]]:
        with _connect(server, timeout=0.5) as conn, conn.cursor() as cur:
            with pytest.raises(pytds.TimeoutError):
                cur.execute("SLEEP")
            cur.execute("ROWS 1")
            return [tuple(r) for r in cur.fetchall()]

    assert await _in_thread(run) == [(0, "row 0")]
    assert [e["outcome"] for e in server.statement_log.entries if e["statement"] == "SLEEP"] == [
        {"cancelled": True}
    ]


async def test_transaction_manager(standin: tuple[TdsServer, StandinEngine]) -> None:
    server, engine = standin

    def run() -> None:
        with _connect(server, autocommit=False) as conn:
            conn.commit()
            conn.rollback()
            with conn.cursor() as cur:
                cur.execute("ROWS 1")

    await _in_thread(run)
    assert engine.sessions[0].in_transaction is False or engine.sessions[0].in_transaction is True
