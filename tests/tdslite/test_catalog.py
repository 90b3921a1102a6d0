"""Catalog views (sys.*, INFORMATION_SCHEMA.*), sp_datatype_info and sp_help, as SQL Server answers.

Engine-level tests pin the values (ids, lengths in bytes, precision/scale, nullability, visibility
per caller); client tests run the same catalog queries through python-tds and pyodbc over FreeTDS
ODBC (two independent clients) against a real tdslite server.
"""

from __future__ import annotations

import datetime
import glob
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytds
import pytest

from tdslite import TdsServer, open_server
from tdslite.engine import Engine, ResultSet, SqlError, StatementFailed, User
from tdslite.engine._catalog import ColumnInfo
from tdslite.engine._sysviews import CatalogObject, Viewer
from tdslite.engine._types import SqlType
from tests.tdslite._tds_helpers import PASSWORDS, USERS_TOML, in_thread

DRIVERS = sorted(glob.glob("/usr/lib/*/odbc/libtdsodbc.so"))
needs_odbc = pytest.mark.skipif(not DRIVERS, reason="FreeTDS ODBC missing")

ADMIN = User("admin", "pw", "admin", "dbo")
READER = User("reader", "pw", "read-only", "analyst", grants={"orders": "read"})

TYPES_TABLE = (
    "CREATE TABLE typed (id int IDENTITY(1,1) PRIMARY KEY, n nvarchar(20) NOT NULL,"
    " nm nvarchar(max), v varchar(30), c char(4), b varbinary(max), d decimal(12,3), m money,"
    " f float, r real,"
    " t time(7), t0 time(0), d2 datetime2(3), dto datetimeoffset(7), dt datetime, day date,"
    " g uniqueidentifier, flag bit DEFAULT 1, tiny tinyint, big bigint)"
)


@pytest.fixture
def engine() -> Iterator[Engine]:
    e = Engine(":memory:", {"admin": ADMIN, "reader": READER}, seed="sample")
    yield e
    e.close()


def rows(engine: Engine, sql: str, user: User = ADMIN) -> list[tuple[Any, ...]]:
    session = engine.open_session(user)
    try:
        out: list[tuple[Any, ...]] = []
        for result in session.execute(sql):
            assert not isinstance(result, StatementFailed), result.error
            if isinstance(result, ResultSet):
                out = list(result.rows)
        return out
    finally:
        session.close()


def test_sys_columns_report_sql_server_ids_lengths_precision(engine: Engine) -> None:
    rows(engine, TYPES_TABLE)
    got = rows(
        engine,
        "SELECT c.name, c.system_type_id, c.user_type_id, c.max_length, c.precision, c.scale,"
        " c.is_nullable, c.is_identity, c.collation_name, ty.name FROM sys.columns c"
        " JOIN sys.tables t ON t.object_id = c.object_id"
        " JOIN sys.types ty ON ty.user_type_id = c.user_type_id"
        " WHERE t.name = 'typed' ORDER BY c.column_id",
    )
    coll = "SQL_Latin1_General_CP1_CI_AS"
    assert got == [
        ("id", 56, 56, 4, 10, 0, False, True, None, "int"),
        ("n", 231, 231, 40, 0, 0, False, False, coll, "nvarchar"),
        ("nm", 231, 231, -1, 0, 0, True, False, coll, "nvarchar"),
        ("v", 167, 167, 30, 0, 0, True, False, coll, "varchar"),
        ("c", 175, 175, 4, 0, 0, True, False, coll, "char"),
        ("b", 165, 165, -1, 0, 0, True, False, None, "varbinary"),
        ("d", 106, 106, 9, 12, 3, True, False, None, "decimal"),
        ("m", 60, 60, 8, 19, 4, True, False, None, "money"),
        ("f", 62, 62, 8, 53, 0, True, False, None, "float"),
        ("r", 59, 59, 4, 24, 0, True, False, None, "real"),
        ("t", 41, 41, 5, 16, 7, True, False, None, "time"),
        ("t0", 41, 41, 3, 8, 0, True, False, None, "time"),
        ("d2", 42, 42, 7, 23, 3, True, False, None, "datetime2"),
        ("dto", 43, 43, 10, 34, 7, True, False, None, "datetimeoffset"),
        ("dt", 61, 61, 8, 23, 3, True, False, None, "datetime"),
        ("day", 40, 40, 3, 10, 0, True, False, None, "date"),
        ("g", 36, 36, 16, 0, 0, True, False, None, "uniqueidentifier"),
        ("flag", 104, 104, 1, 1, 0, True, False, None, "bit"),
        ("tiny", 48, 48, 1, 3, 0, True, False, None, "tinyint"),
        ("big", 127, 127, 8, 19, 0, True, False, None, "bigint"),
    ]
    types = dict(rows(engine, "SELECT name, system_type_id FROM sys.types"))
    assert types["nvarchar"] == 231
    assert types["sysname"] == 231
    assert rows(
        engine, "SELECT user_type_id, max_length FROM sys.types WHERE name = 'sysname'"
    ) == [(256, 256)]


def test_schemas_objects_and_tables(engine: Engine) -> None:
    assert rows(engine, "SELECT name, schema_id FROM sys.schemas ORDER BY schema_id") == [
        ("dbo", 1),
        ("guest", 2),
        ("INFORMATION_SCHEMA", 3),
        ("sys", 4),
    ]
    objects = rows(
        engine,
        "SELECT o.name, o.type, o.type_desc, p.name FROM sys.objects o"
        " LEFT JOIN sys.objects p ON p.object_id = o.parent_object_id ORDER BY o.name",
    )
    assert ("orders", "U ", "USER_TABLE", None) in objects
    assert ("PK_orders", "PK", "PRIMARY_KEY_CONSTRAINT", "orders") in objects
    fks = [o for o in objects if o[1] == "F "]
    assert {o[3] for o in fks} == {"orders"}
    assert len(fks) == 2
    assert {o[0] for o in objects if o[1] == "D "} == {
        r[0] for r in rows(engine, "SELECT name FROM sys.default_constraints")
    }
    tables = rows(
        engine,
        "SELECT t.name, s.name, t.type, t.is_ms_shipped, t.max_column_id_used, t.temporal_type"
        " FROM sys.tables t JOIN sys.schemas s ON s.schema_id = t.schema_id ORDER BY t.name",
    )
    assert tables == [
        ("all_types", "dbo", "U ", False, tables[0][4], 0),
        ("customers", "dbo", "U ", False, 5, 0),
        ("orders", "dbo", "U ", False, 7, 0),
        ("products", "dbo", "U ", False, 5, 0),
    ]
    # object_id is stable across sessions and matches between views
    ids = rows(engine, "SELECT object_id FROM sys.tables WHERE name = 'orders'")
    assert ids == rows(engine, "SELECT object_id FROM sys.objects WHERE name = 'orders'")


def test_indexes_and_index_columns(engine: Engine) -> None:
    rows(engine, "CREATE TABLE heap_t (a int, b nvarchar(10))")
    rows(engine, "CREATE INDEX ix_orders_status ON orders (status, placed_at DESC)")
    got = rows(
        engine,
        "SELECT t.name, i.name, i.index_id, i.type_desc, i.is_unique, i.is_primary_key"
        " FROM sys.indexes i JOIN sys.tables t ON t.object_id = i.object_id"
        " WHERE t.name IN ('orders', 'heap_t') ORDER BY t.name, i.index_id",
    )
    assert got == [
        ("heap_t", None, 0, "HEAP", False, False),
        ("orders", "PK_orders", 1, "CLUSTERED", True, True),
        ("orders", "ix_orders_status", 2, "NONCLUSTERED", False, False),
    ]
    columns = rows(
        engine,
        "SELECT i.name, c.name, ic.key_ordinal, ic.is_descending_key FROM sys.index_columns ic"
        " JOIN sys.indexes i ON i.object_id = ic.object_id AND i.index_id = ic.index_id"
        " JOIN sys.columns c ON c.object_id = ic.object_id AND c.column_id = ic.column_id"
        " WHERE i.name = 'ix_orders_status' ORDER BY ic.key_ordinal",
    )
    assert columns == [
        ("ix_orders_status", "status", 1, False),
        ("ix_orders_status", "placed_at", 2, True),
    ]


def test_foreign_keys_and_their_columns(engine: Engine) -> None:
    got = rows(
        engine,
        "SELECT fk.name, p.name, pc.name, r.name, rc.name, fk.delete_referential_action_desc"
        " FROM sys.foreign_keys fk"
        " JOIN sys.foreign_key_columns fkc ON fkc.constraint_object_id = fk.object_id"
        " JOIN sys.tables p ON p.object_id = fkc.parent_object_id"
        " JOIN sys.columns pc ON pc.object_id = fkc.parent_object_id"
        " AND pc.column_id = fkc.parent_column_id"
        " JOIN sys.tables r ON r.object_id = fkc.referenced_object_id"
        " JOIN sys.columns rc ON rc.object_id = fkc.referenced_object_id"
        " AND rc.column_id = fkc.referenced_column_id ORDER BY pc.name",
    )
    assert [g[1:] for g in got] == [
        ("orders", "customer_id", "customers", "id", "NO_ACTION"),
        ("orders", "product_id", "products", "id", "NO_ACTION"),
    ]
    assert all(g[0].startswith("FK__orders__") for g in got)
    referential = rows(
        engine,
        "SELECT CONSTRAINT_NAME, UNIQUE_CONSTRAINT_NAME, MATCH_OPTION, UPDATE_RULE, DELETE_RULE"
        " FROM INFORMATION_SCHEMA.REFERENTIAL_CONSTRAINTS ORDER BY UNIQUE_CONSTRAINT_NAME",
    )
    assert [r[1:] for r in referential] == [
        ("PK_customers", "SIMPLE", "NO ACTION", "NO ACTION"),
        ("PK_products", "SIMPLE", "NO ACTION", "NO ACTION"),
    ]
    assert {r[0] for r in referential} == {g[0] for g in got}


def test_identity_and_default_constraints(engine: Engine) -> None:
    rows(engine, "INSERT INTO products (name, category, price) VALUES (N'x', N'y', 1)")
    ident = rows(
        engine,
        "SELECT t.name, ic.name, ic.seed_value, ic.increment_value, ic.last_value"
        " FROM sys.identity_columns ic JOIN sys.tables t ON t.object_id = ic.object_id"
        " ORDER BY t.name",
    )
    assert ident == [
        ("customers", "id", 1, 1, 24),
        ("orders", "id", 1, 1, 60),
        ("products", "id", 1, 1, 13),
    ]
    defaults = rows(
        engine,
        "SELECT t.name, c.name, d.definition FROM sys.default_constraints d"
        " JOIN sys.tables t ON t.object_id = d.parent_object_id"
        " JOIN sys.columns c ON c.object_id = d.parent_object_id"
        " AND c.column_id = d.parent_column_id ORDER BY t.name",
    )
    assert defaults == [
        ("customers", "created_at", "(sysdatetime())"),
        ("products", "in_stock", "((1))"),
    ]
    linked = rows(
        engine,
        "SELECT COUNT(*) FROM sys.columns c JOIN sys.default_constraints d"
        " ON d.object_id = c.default_object_id",
    )
    assert linked == [(2,)]


def test_information_schema_views(engine: Engine) -> None:
    assert rows(
        engine,
        "SELECT TABLE_CATALOG, TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE FROM INFORMATION_SCHEMA.TABLES"
        " WHERE TABLE_NAME = 'orders'",
    ) == [("sample", "dbo", "orders", "BASE TABLE")]
    rows(engine, TYPES_TABLE)
    got = rows(
        engine,
        "SELECT COLUMN_NAME, ORDINAL_POSITION, IS_NULLABLE, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH,"
        " CHARACTER_OCTET_LENGTH, NUMERIC_PRECISION, NUMERIC_PRECISION_RADIX, NUMERIC_SCALE,"
        " DATETIME_PRECISION, CHARACTER_SET_NAME, COLUMN_DEFAULT FROM INFORMATION_SCHEMA.COLUMNS"
        " WHERE TABLE_NAME = 'typed' AND COLUMN_NAME IN ('id', 'n', 'nm', 'v', 'd', 'f', 'd2',"
        " 'flag') ORDER BY ORDINAL_POSITION",
    )
    assert got == [
        ("id", 1, "NO", "int", None, None, 10, 10, 0, None, None, None),
        ("n", 2, "NO", "nvarchar", 20, 40, None, None, None, None, "UNICODE", None),
        ("nm", 3, "YES", "nvarchar", -1, -1, None, None, None, None, "UNICODE", None),
        ("v", 4, "YES", "varchar", 30, 30, None, None, None, None, "iso_1", None),
        ("d", 7, "YES", "decimal", None, None, 12, 10, 3, None, None, None),
        ("f", 9, "YES", "float", None, None, 53, 2, None, None, None, None),
        ("d2", 13, "YES", "datetime2", None, None, None, None, None, 3, None, None),
        ("flag", 18, "YES", "bit", None, None, None, None, None, None, None, "((1))"),
    ]
    constraints = rows(
        engine,
        "SELECT tc.CONSTRAINT_TYPE, k.COLUMN_NAME, k.ORDINAL_POSITION"
        " FROM INFORMATION_SCHEMA.TABLE_CONSTRAINTS tc"
        " JOIN INFORMATION_SCHEMA.KEY_COLUMN_USAGE k ON k.CONSTRAINT_NAME = tc.CONSTRAINT_NAME"
        " WHERE tc.TABLE_NAME = 'orders' ORDER BY tc.CONSTRAINT_TYPE, k.COLUMN_NAME",
    )
    assert constraints == [
        ("FOREIGN KEY", "customer_id", 1),
        ("FOREIGN KEY", "product_id", 1),
        ("PRIMARY KEY", "id", 1),
    ]
    assert rows(engine, "SELECT COUNT(*) FROM INFORMATION_SCHEMA.ROUTINES") == [(0,)]
    assert rows(engine, "SELECT COUNT(*) FROM INFORMATION_SCHEMA.VIEWS") == [(0,)]


def test_catalog_shows_only_what_the_caller_may_see(engine: Engine) -> None:
    """A user with grants on orders only sees orders (and its columns, keys, indexes), not the
    customers/products tables its foreign keys point at; types and schemas are public."""
    assert rows(engine, "SELECT name FROM sys.tables", READER) == [("orders",)]
    assert rows(engine, "SELECT DISTINCT TABLE_NAME FROM INFORMATION_SCHEMA.COLUMNS", READER) == [
        ("orders",)
    ]
    objects = {r[0] for r in rows(engine, "SELECT name FROM sys.objects", READER)}
    assert "customers" not in objects
    assert "PK_customers" not in objects
    assert "DF__customer__created___D736F35B" not in objects
    assert rows(engine, "SELECT COUNT(*) FROM sys.foreign_keys", READER) == [(0,)]
    assert rows(engine, "SELECT COUNT(*) FROM sys.foreign_key_columns", READER) == [(0,)]
    assert rows(
        engine, "SELECT COUNT(*) FROM INFORMATION_SCHEMA.REFERENTIAL_CONSTRAINTS", READER
    ) == [(0,)]
    assert rows(engine, "SELECT COUNT(*) FROM sys.types", READER)[0][0] > 25
    # the caller's own session only, whoever else is connected
    other = engine.open_session(ADMIN)
    try:
        mine = rows(engine, "SELECT login_name FROM sys.dm_exec_sessions", READER)
        assert mine == [("reader",)]
        assert rows(engine, "SELECT COUNT(*) FROM sys.dm_exec_connections", READER) == [(1,)]
    finally:
        other.close()
    with pytest.raises(SqlError) as caught:
        rows(engine, "SELECT * FROM customers", READER)
    assert caught.value.number == 229


def test_catalog_updates_are_refused(engine: Engine) -> None:
    for sql in ("UPDATE sys.tables SET name = N'x'", "DELETE FROM INFORMATION_SCHEMA.TABLES"):
        with pytest.raises(SqlError) as caught:
            rows(engine, sql)
        assert caught.value.number == 259
    with pytest.raises(SqlError) as unknown:
        rows(engine, "SELECT * FROM sys.no_such_view")
    assert unknown.value.number == 208


def test_provider_objects_appear_and_fail_closed(engine: Engine) -> None:
    """The provider interface another part of the engine plugs views and procedures into."""

    def views(viewer: Viewer) -> Iterator[CatalogObject]:
        yield CatalogObject(
            "v_north",
            "V",
            columns=(
                ColumnInfo("id", SqlType("int"), False),
                ColumnInfo("name", SqlType("nvarchar", 100), True),
            ),
            definition="CREATE VIEW v_north AS SELECT id, name FROM customers",
        )
        yield CatalogObject("v_secret", "V")  # the reader has no permission on it

    def procedures(viewer: Viewer) -> Iterator[CatalogObject]:
        yield CatalogObject("p_orders", "P", definition="CREATE PROCEDURE p_orders AS SELECT 1")

    engine.catalog_providers["views"] = views
    engine.catalog_providers["procedures"] = procedures
    assert rows(engine, "SELECT name, type_desc FROM sys.views ORDER BY name") == [
        ("v_north", "VIEW"),
        ("v_secret", "VIEW"),
    ]
    assert rows(engine, "SELECT name FROM sys.procedures") == [("p_orders",)]
    assert rows(
        engine,
        "SELECT c.name, c.max_length FROM sys.columns c JOIN sys.views v"
        " ON v.object_id = c.object_id WHERE v.name = 'v_north' ORDER BY c.column_id",
    ) == [("id", 4), ("name", 200)]
    assert rows(
        engine, "SELECT TABLE_NAME, VIEW_DEFINITION FROM INFORMATION_SCHEMA.VIEWS ORDER BY 1"
    )[0] == ("v_north", "CREATE VIEW v_north AS SELECT id, name FROM customers")
    assert rows(engine, "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM INFORMATION_SCHEMA.ROUTINES") == [
        ("p_orders", "PROCEDURE")
    ]
    assert ("v_north", "VIEW") in rows(
        engine, "SELECT TABLE_NAME, TABLE_TYPE FROM INFORMATION_SCHEMA.TABLES"
    )
    definitions = rows(
        engine,
        "SELECT o.name, m.definition FROM sys.sql_modules m"
        " JOIN sys.objects o ON o.object_id = m.object_id ORDER BY o.name",
    )
    assert definitions[0] == ("p_orders", "CREATE PROCEDURE p_orders AS SELECT 1")
    # visibility: only objects the caller may see (the reader's grants name neither view)
    assert rows(engine, "SELECT name FROM sys.views", READER) == []

    def broken(viewer: Viewer) -> Iterator[CatalogObject]:
        raise RuntimeError("registry unavailable")

    engine.catalog_providers["views"] = broken
    with pytest.raises(SqlError):  # fail closed: an error, never rows it could not check
        rows(engine, "SELECT name FROM sys.views")


def test_sp_datatype_info_rows(engine: Engine) -> None:
    got = rows(engine, "EXEC sp_datatype_info_100 0, @ODBCVer = 3")
    by_name = {r[0]: r for r in got}
    assert by_name["datetime2"][1:3] == (93, 27)
    assert by_name["nvarchar"][1:3] == (-9, 4000)
    assert by_name["int identity"][11] == 1  # AUTO_INCREMENT
    assert [r[1] for r in got] == sorted(r[1] for r in got)
    assert rows(engine, "sp_datatype_info 4")[0][0] in ("int", "int identity")
    odbc2 = {r[0]: r[1] for r in rows(engine, "EXEC sp_datatype_info @data_type = 0")}
    assert odbc2["datetime"] == 11


def test_sp_help_unknown_or_invisible_object_is_15009(engine: Engine) -> None:
    for user, name in ((ADMIN, "nope"), (READER, "customers")):
        with pytest.raises(SqlError) as caught:
            rows(engine, f"EXEC sp_help '{name}'", user)
        assert caught.value.number == 15009


# -- through the clients ---------------------------------------------------------------------


@pytest.fixture
async def sample_server(tmp_path: Path) -> Any:
    users = tmp_path / "users.toml"
    users.write_text(USERS_TOML, encoding="utf-8")
    async with open_server(db=tmp_path / "s.sqlite", users=users, seed="sample") as server:
        yield server


#: The shape of query a schema introspector (Kysely's MSSQL dialect) sends.
INTROSPECT = (
    "SELECT t.name AS table_name, s.name AS table_schema, c.name AS column_name,"
    " c.is_nullable, c.is_identity, ty.name AS type_name, c.max_length, c.precision, c.scale,"
    " CASE WHEN d.object_id IS NULL THEN 0 ELSE 1 END AS has_default"
    " FROM sys.tables t INNER JOIN sys.schemas s ON t.schema_id = s.schema_id"
    " INNER JOIN sys.columns c ON t.object_id = c.object_id"
    " INNER JOIN sys.types ty ON c.system_type_id = ty.system_type_id"
    " AND c.user_type_id = ty.user_type_id"
    " LEFT JOIN sys.default_constraints d ON d.object_id = c.default_object_id"
    " WHERE t.name IN ('customers', 'orders') ORDER BY t.name, c.column_id"
)
EXPECTED_INTROSPECTION = [
    ("customers", "dbo", "id", False, True, "int", 4, 10, 0, 0),
    ("customers", "dbo", "name", False, False, "nvarchar", 200, 0, 0, 0),
    ("customers", "dbo", "email", False, False, "nvarchar", 400, 0, 0, 0),
    ("customers", "dbo", "region", False, False, "nvarchar", 40, 0, 0, 0),
    ("customers", "dbo", "created_at", False, False, "datetime2", 7, 23, 3, 1),
    ("orders", "dbo", "id", False, True, "int", 4, 10, 0, 0),
    ("orders", "dbo", "customer_id", False, False, "int", 4, 10, 0, 0),
    ("orders", "dbo", "product_id", False, False, "int", 4, 10, 0, 0),
    ("orders", "dbo", "quantity", False, False, "int", 4, 10, 0, 0),
    ("orders", "dbo", "amount", False, False, "decimal", 9, 12, 2, 0),
    ("orders", "dbo", "status", False, False, "nvarchar", 40, 0, 0, 0),
    ("orders", "dbo", "placed_at", False, False, "datetimeoffset", 9, 30, 3, 0),
]


def _pytds(server: TdsServer, sql: str, login: str = "admin") -> list[list[tuple[Any, ...]]]:
    with pytds.connect(
        dsn=server.host, port=server.port, user=login, password=PASSWORDS[login],
        autocommit=True,
    ) as conn:  # fmt: skip
        cur = conn.cursor()
        cur.execute(sql)
        sets = []
        while True:
            if cur.description:
                sets.append([tuple(r) for r in cur.fetchall()])
            if not cur.nextset():
                return sets


def _odbc(server: TdsServer, tds: str = "7.4") -> Any:
    import pyodbc

    return pyodbc.connect(
        f"DRIVER={DRIVERS[0]};SERVER={server.host};PORT={server.port};UID=admin;"
        f"PWD={PASSWORDS['admin']};TDS_Version={tds}",
        autocommit=True,
        timeout=10,
    )


def _pyodbc(server: TdsServer, sql: str) -> list[list[tuple[Any, ...]]]:
    conn = _odbc(server)
    try:
        cur = conn.cursor()
        cur.execute(sql)
        sets = []
        while True:
            if cur.description:
                sets.append([tuple(r) for r in cur.fetchall()])
            if not cur.nextset():
                return sets
    finally:
        conn.close()


async def test_introspection_query_through_pytds(sample_server: TdsServer) -> None:
    got = await in_thread(_pytds, sample_server, INTROSPECT)
    assert got == [EXPECTED_INTROSPECTION]


@needs_odbc
async def test_introspection_query_through_pyodbc(sample_server: TdsServer) -> None:
    got = await in_thread(_pyodbc, sample_server, INTROSPECT)
    assert got == [EXPECTED_INTROSPECTION]


async def test_dm_exec_views_show_own_connection_pytds(sample_server: TdsServer) -> None:
    sets = await in_thread(
        _pytds,
        sample_server,
        "SELECT s.session_id, s.login_name, s.program_name, c.client_net_address,"
        " c.local_tcp_port, c.protocol_version, c.net_transport, @@SPID"
        " FROM sys.dm_exec_sessions s JOIN sys.dm_exec_connections c"
        " ON c.session_id = s.session_id",
        "reader",
    )
    (row,) = sets[0]
    assert row[0] == row[7]
    assert row[1] == "reader"
    assert row[2]  # python-tds sends an application name
    assert row[3] == "127.0.0.1"
    assert row[4] == sample_server.port
    assert row[5] == 0x74000004
    assert row[6] == "TCP"


@needs_odbc
async def test_pyodbc_get_type_info_then_datetime2_keeps_precision(
    sample_server: TdsServer,
) -> None:
    def run() -> tuple[list[Any], Any, Any]:
        conn = _odbc(sample_server)
        try:
            cur = conn.cursor()
            info = [tuple(r) for r in cur.getTypeInfo().fetchall()]
            cur.execute(
                "SELECT CAST('2024-02-29 13:14:15.1234567' AS datetime2(7)) AS d, created_at"
                " FROM customers WHERE id = 1"
            )
            value = cur.fetchone()
            return info, value, cur.description
        finally:
            conn.close()

    info, value, description = await in_thread(run)
    names = {r[0]: r for r in info}
    assert names["datetime2"][1] == 93
    assert names["datetime2"][2] == 27
    assert len(info) >= 30
    assert value[0] == datetime.datetime(2024, 2, 29, 13, 14, 15, 123456)
    assert isinstance(value[1], datetime.datetime)
    assert description[0][1] is datetime.datetime
    assert description[0][5] == 7  # scale: all 7 fractional digits described


SP_HELP_SHAPE = [
    ["Name", "Owner", "Type", "Created_datetime"],
    ["Column_name", "Type", "Computed", "Length", "Prec", "Scale", "Nullable",
     "TrimTrailingBlanks", "FixedLenNullInSource", "Collation"],
    ["Identity", "Seed", "Increment", "Not For Replication"],
    ["RowGuidCol"],
    ["Data_located_on_filegroup"],
    ["index_name", "index_description", "index_keys"],
    ["constraint_type", "constraint_name", "delete_action", "update_action", "status_enabled",
     "status_for_replication", "constraint_keys"],
]  # fmt: skip


async def test_sp_help_result_sets_pytds(sample_server: TdsServer) -> None:
    def run() -> tuple[list[list[str]], list[list[tuple[Any, ...]]]]:
        with pytds.connect(
            dsn=sample_server.host, port=sample_server.port, user="admin",
            password=PASSWORDS["admin"], autocommit=True,
        ) as conn:  # fmt: skip
            cur = conn.cursor()
            cur.execute("sp_help 'orders'")
            shapes, sets = [], []
            while True:
                shapes.append([d[0] for d in cur.description])
                sets.append([tuple(r) for r in cur.fetchall()])
                if not cur.nextset():
                    return shapes, sets

    shapes, sets = await in_thread(run)
    assert shapes == SP_HELP_SHAPE
    assert sets[0][0][:3] == ("orders", "dbo", "user table")
    assert isinstance(sets[0][0][3], datetime.datetime)
    assert sets[1][0] == ("id", "int", "no", 4, "   10", "    0", "no", "(n/a)", "(n/a)", None)
    assert sets[1][5] == (
        "status", "nvarchar", "no", 40, "     ", "     ", "no", "no", "no",
        "SQL_Latin1_General_CP1_CI_AS",
    )  # fmt: skip
    assert sets[2] == [("id", Decimal(1), Decimal(1), 0)]
    assert sets[5] == [("PK_orders", "clustered, unique, primary key located on PRIMARY", "id")]
    kinds = [r[0] for r in sets[6]]
    assert kinds.count("FOREIGN KEY") == 2
    assert "PRIMARY KEY (clustered)" in kinds
    refs = [r[6] for r in sets[6] if str(r[6]).startswith("REFERENCES")]
    assert sorted(refs) == [
        "REFERENCES sample.dbo.customers (id)",
        "REFERENCES sample.dbo.products (id)",
    ]


@needs_odbc
async def test_sp_help_through_pyodbc(sample_server: TdsServer) -> None:
    sets = await in_thread(_pyodbc, sample_server, "EXEC sp_help 'customers'")
    assert sets[0][0][:3] == ("customers", "dbo", "user table")
    assert [r[0] for r in sets[1]] == ["id", "name", "email", "region", "created_at"]
    assert sets[2][0][0] == "id"
    # customers is referenced by orders' foreign key: SQL Server's last result set says so
    assert len(sets[-1]) == 1
    assert sets[-1][0][0].startswith("sample.dbo.orders: FK__orders__customer")


def test_metadata_functions_respect_visibility(engine: Engine) -> None:
    sql = (
        "SELECT OBJECT_ID(N'dbo.orders'), OBJECT_ID('customers'), OBJECT_ID('customers', 'U'),"
        " OBJECT_ID('customers', 'V'), OBJECT_NAME(OBJECT_ID('[dbo].[orders]')), SCHEMA_NAME(),"
        " SCHEMA_NAME(4), SCHEMA_ID('INFORMATION_SCHEMA'), TYPE_NAME(231), TYPE_ID('int'),"
        " DB_ID(), DB_ID('master'), OBJECT_ID('sys.orders')"
    )
    ids = dict(rows(engine, "SELECT name, object_id FROM sys.tables"))
    assert rows(engine, sql) == [
        (ids["orders"], ids["customers"], ids["customers"], None, "orders", "dbo", "sys", 3,
         "nvarchar", 56, 5, 1, None)
    ]  # fmt: skip
    # the reader may not use customers: no id, as SQL Server's metadata visibility
    assert rows(engine, sql, READER)[0][:3] == (ids["orders"], None, None)
    assert rows(
        engine,
        "SELECT SCHEMA_NAME(t.schema_id), t.name FROM sys.tables t"
        " WHERE t.object_id = OBJECT_ID('orders')",
    ) == [("dbo", "orders")]


def test_views_procedures_and_schemas_of_the_registry(engine: Engine) -> None:
    """Objects made with CREATE VIEW / PROCEDURE / SCHEMA appear through the default providers;
    a view is not a table, temporary tables are not in this database's catalog."""
    for sql in (
        "CREATE SCHEMA sales",
        "CREATE VIEW dbo.north AS SELECT id, name FROM customers WHERE region = N'north'",
        "CREATE PROCEDURE dbo.p_top @n int = 1 AS SELECT TOP (@n) id FROM orders",
    ):
        rows(engine, sql)
    assert ("north",) not in rows(engine, "SELECT name FROM sys.tables")
    assert rows(
        engine,
        "SELECT v.name, c.name, c.max_length FROM sys.views v"
        " JOIN sys.columns c ON c.object_id = v.object_id ORDER BY c.column_id",
    ) == [("north", "id", 4), ("north", "name", 200)]
    assert rows(engine, "SELECT name, type_desc FROM sys.procedures") == [
        ("p_top", "SQL_STORED_PROCEDURE")
    ]
    assert rows(engine, "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM INFORMATION_SCHEMA.ROUTINES") == [
        ("p_top", "PROCEDURE")
    ]
    assert ("north", "VIEW") in rows(
        engine, "SELECT TABLE_NAME, TABLE_TYPE FROM INFORMATION_SCHEMA.TABLES"
    )
    (definition,) = rows(engine, "SELECT VIEW_DEFINITION FROM INFORMATION_SCHEMA.VIEWS")[0]
    assert definition.startswith("CREATE VIEW dbo.north AS SELECT")
    assert rows(engine, "SELECT SCHEMA_NAME(SCHEMA_ID('sales')), SCHEMA_ID('nope')") == [
        ("sales", None)
    ]
    assert ("sales",) in rows(engine, "SELECT name FROM sys.schemas")
    session = engine.open_session(ADMIN)
    try:
        list(session.execute("CREATE TABLE #scratch (i int)"))
        counted = [r for r in session.execute("SELECT COUNT(*) FROM sys.tables")]
        assert isinstance(counted[0], ResultSet)
        assert list(counted[0].rows) == [(4,)]
    finally:
        session.close()
