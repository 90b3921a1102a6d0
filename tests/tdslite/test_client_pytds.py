"""python-tds (an independent client) against tdslite with the real engine.

Connect, batches, parameters of every type round-tripping through a table, row counts, errors with
their SQL Server numbers, transactions (Transaction Manager with autocommit off, T-SQL with it on),
cancel, multi-packet messages both ways, pooling's sp_reset_connection, the statement log.
"""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from pathlib import Path
from typing import Any

import pytds
import pytest

from tdslite import TdsServer, open_server
from tests.tdslite._tds_helpers import PASSWORDS, in_thread

D = decimal.Decimal
TZ = datetime.timezone(datetime.timedelta(hours=-3, minutes=-30))

#: (column, declared type, value sent, value expected back)
TYPED: list[tuple[str, str, Any, Any]] = [
    ("c_bit", "bit", True, True),
    ("c_tinyint", "tinyint", 255, 255),
    ("c_smallint", "smallint", -32768, -32768),
    ("c_int", "int", -2147483648, -2147483648),
    ("c_bigint", "bigint", 2**62 + 7, 2**62 + 7),
    ("c_dec", "decimal(18,4)", D("12345678901234.5678"), D("12345678901234.5678")),
    (
        "c_num",
        "numeric(38,10)",
        D("-1234567890123456789012345678.0123456789"),
        D("-1234567890123456789012345678.0123456789"),
    ),
    ("c_money", "money", D("922337203685477.5807"), D("922337203685477.5807")),
    ("c_smallmoney", "smallmoney", D("-214748.3648"), D("-214748.3648")),
    ("c_real", "real", 1.5, 1.5),
    ("c_float", "float", 2.0**-40, 2.0**-40),
    ("c_char", "char(5)", "ab", "ab   "),
    ("c_varchar", "varchar(50)", "plain ascii", "plain ascii"),
    ("c_nchar", "nchar(3)", "é", "é  "),
    ("c_nvarchar", "nvarchar(50)", "Grüße, 世界", "Grüße, 世界"),
    ("c_varchar_max", "varchar(max)", "v" * 9000, "v" * 9000),
    ("c_nvarchar_max", "nvarchar(max)", "ñ" * 70000, "ñ" * 70000),
    ("c_binary", "binary(4)", pytds.Binary(b"\x01\x02"), b"\x01\x02\x00\x00"),
    ("c_varbinary", "varbinary(50)", pytds.Binary(b"\x00\xff\x10"), b"\x00\xff\x10"),
    (
        "c_varbinary_max",
        "varbinary(max)",
        pytds.Binary(bytes(range(256)) * 40),
        bytes(range(256)) * 40,
    ),
    ("c_date", "date", datetime.date(1, 1, 1), datetime.date(1, 1, 1)),
    ("c_time", "time(7)", datetime.time(23, 59, 59, 999999), datetime.time(23, 59, 59, 999999)),
    (
        "c_datetime",
        "datetime",
        datetime.datetime(2024, 2, 29, 12, 30, 45, 997000),
        datetime.datetime(2024, 2, 29, 12, 30, 45, 997000),
    ),
    (
        "c_smalldatetime",
        "smalldatetime",
        datetime.datetime(2024, 2, 29, 12, 30),
        datetime.datetime(2024, 2, 29, 12, 30),
    ),
    (
        "c_datetime2",
        "datetime2(7)",
        datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
        datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
    ),
    (
        "c_dto",
        "datetimeoffset(7)",
        datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=TZ),
        datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=TZ),
    ),
    (
        "c_guid",
        "uniqueidentifier",
        uuid.UUID("00112233-4455-6677-8899-aabbccddeeff"),
        uuid.UUID("00112233-4455-6677-8899-aabbccddeeff"),
    ),
]


def connect(server: TdsServer, login: str = "admin", **kw: Any) -> pytds.Connection:
    options: dict[str, Any] = {"autocommit": True, "timeout": 10, "login_timeout": 5, **kw}
    return pytds.connect(
        server.host, port=server.port, user=login, password=PASSWORDS[login], **options
    )


async def test_connect_and_batch(tds_server: TdsServer) -> None:
    def run() -> tuple[Any, ...]:
        with connect(tds_server) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 AS one, N'två' AS word, CAST(8 AS tinyint) AS small")
            row = cur.fetchone()
            names = [d[0] for d in cur.description]
            return tuple(row), names, conn.product_version

    row, names, _version = await in_thread(run)
    assert row == (1, "två", 8)
    assert names == ["one", "word", "small"]


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "transactional"])
async def test_every_type_round_trips(tds_server: TdsServer, autocommit: bool) -> None:
    columns = ", ".join(f"{name} {sqltype} NULL" for name, sqltype, _, _ in TYPED)
    names = ", ".join(name for name, _, _, _ in TYPED)
    marks = ", ".join(["%s"] * len(TYPED))

    def run() -> tuple[tuple[Any, ...], tuple[Any, ...], list[str]]:
        with connect(tds_server, autocommit=autocommit) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE TABLE typed (id int PRIMARY KEY, {columns})")
            cur.execute(
                f"INSERT INTO typed (id, {names}) VALUES (1, {marks})",
                [sent for _, _, sent, _ in TYPED],
            )
            cur.execute("INSERT INTO typed (id) VALUES (2)")
            conn.commit()
            cur.execute(f"SELECT {names} FROM typed ORDER BY id")
            full, empty = cur.fetchall()
            return tuple(full), tuple(empty), [d[0] for d in cur.description]

    full, empty, described = await in_thread(run)
    assert described == [name for name, _, _, _ in TYPED]
    for (name, _, _, expected), got in zip(TYPED, full, strict=True):
        assert got == expected, name
        assert type(got) is type(expected), name
    assert empty == (None,) * len(TYPED)


async def test_parameters_select_directly(tds_server: TdsServer) -> None:
    def run() -> tuple[Any, ...]:
        with connect(tds_server) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT %(a)s AS a, %(b)s AS b, %(c)s AS c",
                {"a": D("1.25"), "b": "x", "c": uuid.UUID(int=5)},
            )
            return tuple(cur.fetchone())

    assert await in_thread(run) == (D("1.25"), "x", uuid.UUID(int=5))


async def test_row_counts_and_errors(tds_server: TdsServer) -> None:
    def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with connect(tds_server) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE counted (id int PRIMARY KEY, v nvarchar(10) NOT NULL)")
            cur.execute("INSERT INTO counted VALUES (1, N'a'), (2, N'b'), (3, N'c')")
            out["inserted"] = cur.rowcount
            cur.execute("UPDATE counted SET v = N'z' WHERE id >= %s", (2,))
            out["updated"] = cur.rowcount
            for key, sql in {
                "missing_table": "SELECT * FROM no_such_table",
                "missing_column": "SELECT nope FROM counted",
                "duplicate_key": "INSERT INTO counted VALUES (1, N'dup')",
                "null": "INSERT INTO counted (id) VALUES (9)",
                "divide": "SELECT 1 / 0",
                "syntax": "SELECT * FROM WHERE",
                "unknown_proc": "EXEC no_such_proc",
            }.items():
                try:
                    cur.execute(sql)
                    cur.fetchall()
                except pytds.Error as exc:
                    out[key] = (type(exc).__name__, exc.msg_no)
            cur.execute("SELECT COUNT(*) FROM counted")
            out["after"] = cur.fetchone()[0]
        return out

    out = await in_thread(run)
    assert out["inserted"] == 3
    assert out["updated"] == 2
    assert out["missing_table"] == ("ProgrammingError", 208)
    assert out["missing_column"] == ("ProgrammingError", 207)
    assert out["duplicate_key"] == ("IntegrityError", 2627)
    assert out["null"] == ("IntegrityError", 515)
    assert out["divide"][1] == 8134
    assert out["syntax"] == ("ProgrammingError", 102)
    assert out["unknown_proc"] == ("ProgrammingError", 2812)
    assert out["after"] == 3


async def test_several_result_sets(tds_server: TdsServer) -> None:
    def run() -> list[list[tuple[Any, ...]]]:
        with connect(tds_server) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 AS a; SELECT N'b' AS b, 2 AS c; SELECT 3 AS d")
            sets = [[tuple(r) for r in cur.fetchall()]]
            while cur.nextset():
                sets.append([tuple(r) for r in cur.fetchall()])
            return sets

    assert await in_thread(run) == [[(1,)], [("b", 2)], [(3,)]]


async def test_transactions_manager_requests(tds_server: TdsServer) -> None:
    """autocommit=False: python-tds sends TM BEGIN at login, TM COMMIT/ROLLBACK later."""

    def run() -> tuple[int, int, list[int]]:
        with connect(tds_server) as setup, setup.cursor() as cur:
            cur.execute("CREATE TABLE tx (id int PRIMARY KEY)")
        with connect(tds_server, autocommit=False) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO tx VALUES (1)")
            conn.rollback()
            cur.execute("SELECT COUNT(*) FROM tx")
            after_rollback = cur.fetchone()[0]
            cur.execute("INSERT INTO tx VALUES (2)")
            conn.commit()
            cur.execute("SELECT COUNT(*) FROM tx")
            after_commit = cur.fetchone()[0]
        with connect(tds_server) as other, other.cursor() as cur:
            cur.execute("SELECT id FROM tx")
            seen = [r[0] for r in cur.fetchall()]
        return after_rollback, after_commit, seen

    assert await in_thread(run) == (0, 1, [2])


async def test_transactions_in_tsql(tds_server: TdsServer) -> None:
    def run() -> list[int]:
        with connect(tds_server) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE tt (id int PRIMARY KEY)")
            cur.execute("BEGIN TRANSACTION; INSERT INTO tt VALUES (1); ROLLBACK")
            cur.execute("BEGIN TRAN")
            cur.execute("INSERT INTO tt VALUES (2)")
            cur.execute("COMMIT")
            cur.execute("SELECT id FROM tt")
            return [r[0] for r in cur.fetchall()]

    assert await in_thread(run) == [2]


#: 10**10 rows to count: far longer than the client's 2 s timeout.
LONG_QUERY = "SELECT COUNT(*) FROM " + ", ".join(f"ten t{i}" for i in range(10))


async def test_cancel_long_query_then_reuse(tds_server: TdsServer) -> None:
    """A query past the client's timeout: python-tds sends ATTENTION, tdslite stops the query."""

    def run() -> list[tuple[Any, ...]]:
        with connect(tds_server) as setup, setup.cursor() as cur:
            cur.execute("CREATE TABLE ten (i int)")
            cur.execute("INSERT INTO ten VALUES " + ", ".join(f"({i})" for i in range(10)))
        with connect(tds_server, timeout=2) as conn, conn.cursor() as cur:
            with pytest.raises(pytds.TimeoutError):
                cur.execute(LONG_QUERY)
            cur.execute("SELECT 42")
            return [tuple(r) for r in cur.fetchall()]

    assert await in_thread(run) == [(42,)]
    outcomes = [
        e["outcome"] for e in tds_server.statement_log.entries if e["statement"] == LONG_QUERY
    ]
    assert outcomes == [{"cancelled": True}]


async def test_multi_packet_both_ways_and_packet_size(tds_server: TdsServer) -> None:
    big = "é" * 200_000  # 400 kB request and reply

    def run(blocksize: int) -> int:
        with connect(tds_server, blocksize=blocksize) as conn, conn.cursor() as cur:
            cur.execute("SELECT %s AS big", (big,))
            got = cur.fetchone()[0]
            assert got == big
            cur.execute("SELECT TOP 1000 * FROM (SELECT 1 AS x) AS t")
            return len(got)

    assert await in_thread(run, 512) == 200_000
    assert await in_thread(run, 16384) == 200_000


async def test_pooling_resets_session_context(tds_server: TdsServer) -> None:
    """python-tds pooling calls sp_reset_connection by name when a pooled connection is reused."""

    def run() -> tuple[Any, Any]:
        with connect(tds_server, pooling=True) as conn, conn.cursor() as cur:
            cur.execute("EXEC sp_set_session_context @key = N'tenant', @value = N'acme'")
            cur.execute("SELECT SESSION_CONTEXT(N'tenant')")
            before = cur.fetchone()[0]
        with connect(tds_server, pooling=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT SESSION_CONTEXT(N'tenant')")
            after = cur.fetchone()[0]
        return before, after

    assert await in_thread(run) == ("acme", None)
    kinds = [(e["kind"], e["statement"]) for e in tds_server.statement_log.entries]
    assert ("reset", "sp_reset_connection") in kinds


async def test_refused_statement_logged_not_run(tds_server: TdsServer) -> None:
    def run() -> tuple[int, int]:
        with connect(tds_server) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE guarded (id int PRIMARY KEY)")
        with connect(tds_server, login="reader") as conn, conn.cursor() as cur:
            with pytest.raises(pytds.Error) as err:
                cur.execute("INSERT INTO guarded VALUES (%s)", (987654,))
            cur.execute("SELECT COUNT(*) FROM guarded")
            return err.value.msg_no, cur.fetchone()[0]

    number, count = await in_thread(run)
    assert (number, count) == (229, 0)
    entry = next(
        e for e in tds_server.statement_log.entries if "INSERT INTO guarded" in e["statement"]
    )
    assert entry["login"] == "reader"
    assert entry["user"] == "analyst"
    assert entry["outcome"] == {"error": 229}
    assert entry["params"] == [{"name": "@P1", "type": "int"}]
    assert "987654" not in json.dumps(entry)


async def test_wrong_password(tds_server: TdsServer) -> None:
    def run() -> None:
        pytds.connect(
            tds_server.host, port=tds_server.port, user="admin", password="wrong", login_timeout=5
        )

    with pytest.raises(pytds.OperationalError) as err:
        await in_thread(run)
    assert (err.value.msg_no, err.value.severity) == (18456, 14)


async def test_unknown_database_fails_the_login_at_once(tds_server: TdsServer) -> None:
    """4060 then 18456, as SQL Server sends them: python-tds gives up at once (a lone 4060 is
    retried until login_timeout and surfaces as a bare TimeoutError)."""

    def run() -> None:
        connect(tds_server, login="reader", database="nope", login_timeout=8)

    with pytest.raises(pytds.OperationalError) as err:
        await in_thread(run, limit=10)
    assert (err.value.msg_no, err.value.severity) == (18456, 14)
    assert err.value.args[0] == (
        'Cannot open database "nope" requested by the login. The login failed. '
        "Login failed for user 'reader'."
    )


async def test_tls_verified_and_wrong_ca_refused(
    tmp_path: Path, tds_users_file: Path, tls_files: dict[str, str]
) -> None:
    async with open_server(
        db=tmp_path / "tls.sqlite",
        users=tds_users_file,
        tls_cert=tls_files["cert"],
        tls_key=tls_files["key"],
    ) as server:

        def run(cafile: str) -> Any:
            with (
                pytds.connect(
                    "localhost",
                    port=server.port,
                    user="reader",
                    password=PASSWORDS["reader"],
                    cafile=cafile,
                    validate_host=True,
                    login_timeout=5,
                    timeout=5,
                ) as conn,
                conn.cursor() as cur,
            ):
                cur.execute("SELECT N'over TLS' AS s")
                return cur.fetchone()[0]

        assert await in_thread(run, tls_files["ca"]) == "over TLS"
        with pytest.raises(Exception, match="certificate verify failed"):
            await in_thread(run, tls_files["other_ca"])


async def test_many_parameterised_statements_in_a_row(tds_server: TdsServer) -> None:
    """python-tds sends ATTENTION before each RPC that follows another (success path): every one
    must be acknowledged exactly once, however the ATTENTION races the end of the previous reply."""

    def run() -> int:
        with connect(tds_server, timeout=5) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE many (id int PRIMARY KEY, v nvarchar(20))")
            for i in range(100):
                cur.execute("INSERT INTO many VALUES (%s, %s)", (i, f"v{i}"))
            cur.execute("SELECT COUNT(*) FROM many")
            return int(cur.fetchone()[0])

    assert await in_thread(run, limit=60) == 100


async def test_prepare_execute_unprepare_by_proc_id(tds_server: TdsServer) -> None:
    """sp_prepare (11) returns a handle as RETURNVALUE, sp_execute (12) runs it, sp_unprepare (15)
    drops it; sp_executesql also works when called by name."""
    from pytds import tds_base

    def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with connect(tds_server) as conn, conn.cursor() as cur:
            handle = cur.callproc(
                tds_base.SP_PREPARE,
                [pytds.output(param_type="int", value=None), "@a int", "SELECT @a * 2 AS d"],
            )[0]
            out["handle"] = handle
            cur.callproc(tds_base.SP_EXECUTE, [handle, 21])
            out["first"] = cur.fetchall()
            cur.callproc(tds_base.SP_EXECUTE, [handle, 50])
            out["second"] = cur.fetchall()
            cur.callproc(tds_base.InternalProc(15, "sp_unprepare"), [handle])
            with pytest.raises(pytds.Error) as err:
                cur.callproc(tds_base.SP_EXECUTE, [handle, 1])
            out["gone"] = err.value.msg_no
            cur.callproc("sp_executesql", ["SELECT @x + 1 AS y", "@x int", 41])
            out["by_name"] = cur.fetchall()
        return out

    out = await in_thread(run)
    assert isinstance(out["handle"], int)
    assert [tuple(r) for r in out["first"]] == [(42,)]
    assert [tuple(r) for r in out["second"]] == [(100,)]
    assert out["gone"] == 8179
    assert [tuple(r) for r in out["by_name"]] == [(42,)]


async def test_date_and_time_bounds_as_parameters(tds_server: TdsServer) -> None:
    """The smallest and largest date/datetime2 values round-trip as python-tds parameters."""
    values = [
        datetime.datetime(1, 1, 1),
        datetime.date(1, 1, 1),
        datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
        datetime.date(9999, 12, 31),
    ]

    def run() -> list[Any]:
        with connect(tds_server) as conn, conn.cursor() as cur:
            out = []
            for value in values:
                cur.execute("SELECT %s AS v", (value,))
                out.append(cur.fetchone()[0])
            return out

    assert await in_thread(run) == values


async def test_sp_executesql_converts_a_value_to_its_declared_type(tds_server: TdsServer) -> None:
    """python-tds cannot carry a 7th fractional digit, so clients send such a datetime2 as
    nvarchar declared datetime2(7): the statement must see a datetime2 (as SQL Server's
    sp_executesql converts each value to its declared type), never the string."""
    sql = "SELECT @d AS d, CONVERT(nvarchar(40), @d, 121) AS t, DATEPART(year, @d) AS y"
    cases = {
        "0001-01-01T00:00:00.0000001": (
            datetime.datetime(1, 1, 1),
            "0001-01-01 00:00:00.0000001",
            1,
        ),
        "9999-12-31T23:59:59.9999999": (
            datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
            "9999-12-31 23:59:59.9999999",
            9999,
        ),
    }

    def run() -> dict[str, tuple[Any, ...]]:
        with connect(tds_server) as conn, conn.cursor() as cur:
            out = {}
            for text in cases:
                cur.callproc("sp_executesql", [sql, "@d datetime2(7)", text])
                out[text] = tuple(cur.fetchone())
            return out

    assert await in_thread(run) == cases
