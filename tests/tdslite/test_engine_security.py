"""tdslite engine: least privilege (roles, grants, authorizer), EXECUTE AS, context, users."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tdslite.engine import (
    Engine,
    Param,
    ResultSet,
    Session,
    SqlError,
    SqlType,
    User,
    UsersFileError,
    load_users,
)
from tdslite.engine._perms import Authorizer, Principal

USERS_TOML = """
[users.sa]
password = "admin-pw"
role = "admin"
database_user = "dbo"

[users.app_rw]
password = "rw-pw"
role = "read-write"
database_user = "app"

[users.analyst_ro]
password = "ro-pw"
role = "read-only"
database_user = "analyst"
can_impersonate = ["app", "orders_clerk"]

[users.clerk]
role = "read-write"
database_user = "orders_clerk"
grants = { orders = "write", customers = "read" }
"""


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> dict[str, User]:
    path = tmp_path_factory.mktemp("users") / "users.toml"
    path.write_text(USERS_TOML, encoding="utf-8")
    return load_users(path)


@pytest.fixture(scope="module")
def seeded_file(tmp_path_factory: pytest.TempPathFactory, users: dict[str, User]) -> Path:
    path = tmp_path_factory.mktemp("seed") / "sample.sqlite"
    Engine(path, users, seed="sample").close()
    return path


@pytest.fixture
def engine(seeded_file: Path, tmp_path: Path, users: dict[str, User]) -> Iterator[Engine]:
    copy = tmp_path / "sample.sqlite"
    shutil.copyfile(seeded_file, copy)
    engine = Engine(copy, users, database="sample")
    try:
        yield engine
    finally:
        engine.close()


def login(engine: Engine, name: str, password: str) -> Session:
    return engine.open_session(engine.authenticate(name, password))


def run(session: Session, sql: str, params: tuple[Param, ...] = ()) -> list[object]:
    return [list(r.rows) if isinstance(r, ResultSet) else r for r in session.execute(sql, params)]


def refused(session: Session, sql: str) -> SqlError:
    with pytest.raises(SqlError) as caught:
        run(session, sql)
    return caught.value


def order_count(engine: Engine) -> int:
    admin = login(engine, "sa", "admin-pw")
    ((row,),) = run(admin, "SELECT COUNT(*) FROM orders")  # type: ignore[misc]
    admin.close()
    return int(row[0])


@pytest.mark.parametrize(
    ("sql", "number"),
    [
        ("INSERT INTO orders (customer_id, product_id, quantity, amount, status, placed_at)"
         " VALUES (1, 1, 1, 1, N'new', SYSDATETIMEOFFSET())", 229),
        ("UPDATE orders SET amount = 0", 229),
        ("DELETE FROM orders", 229),
        ("DELETE orders WHERE id = 1", 229),
        ("WITH doomed AS (SELECT id FROM orders)"
         " DELETE FROM orders WHERE id IN (SELECT id FROM doomed)", 229),
        ("SELECT * INTO stolen FROM orders", 262),
        ("CREATE TABLE evil (a int)", 262),
        ("DROP TABLE orders", 3701),
        ("TRUNCATE TABLE orders", 1088),
        ("IF 1 = 1 DELETE FROM orders", 229),
        ("BEGIN TRY DELETE FROM orders END TRY BEGIN CATCH THROW; END CATCH", 229),
        ("SELECT 1; DELETE FROM orders", 229),
        ("EXEC sp_executesql N'DELETE FROM orders'", 2812),
        ("CREATE INDEX ix ON orders (status)", 262),
    ],
)  # fmt: skip
def test_read_only_login_cannot_write(engine: Engine, sql: str, number: int) -> None:
    session = login(engine, "analyst_ro", "ro-pw")
    error = refused(session, sql)
    assert error.number == number, error.message
    if number == 229:
        assert error.severity == 14
        assert "'orders'" in error.message
    assert order_count(engine) == 60
    assert run(session, "SELECT COUNT(*) FROM orders") == [[(60,)]]


def test_read_write_login_has_dml_but_no_ddl(engine: Engine) -> None:
    session = login(engine, "app_rw", "rw-pw")
    results = run(
        session, "UPDATE orders SET status = N'paid' WHERE id = 1; DELETE FROM orders WHERE id = 2"
    )
    assert [getattr(r, "count", None) for r in results] == [1, 1]
    assert refused(session, "CREATE TABLE t (a int)").number == 262
    assert refused(session, "DROP TABLE orders").number == 3701


def test_per_table_grants(engine: Engine) -> None:
    clerk = engine.open_session(engine.users["clerk"])
    assert run(clerk, "SELECT COUNT(*) FROM customers") == [[(24,)]]
    assert run(clerk, "DELETE FROM orders WHERE id = 1")[0].count == 1  # type: ignore[attr-defined]
    error = refused(clerk, "UPDATE customers SET name = N'x'")
    assert (error.number, "'customers'" in error.message) == (229, True)
    error = refused(clerk, "SELECT * FROM products")
    assert (error.number, "SELECT" in error.message) == (229, True)
    error = refused(
        clerk, "UPDATE o SET amount = 0 FROM orders o JOIN products p ON p.id = o.product_id"
    )
    assert (error.number, "'products'" in error.message) == (229, True)
    # A join through a table outside the grants is refused as a whole.
    assert (
        refused(clerk, "SELECT o.id FROM orders o JOIN products p ON p.id = o.product_id").number
        == 229
    )


def test_internal_tables_are_invisible_even_to_admin(engine: Engine) -> None:
    admin = login(engine, "sa", "admin-pw")
    for sql in (
        "SELECT * FROM __tds_columns",
        "SELECT * FROM sqlite_master",
        "DROP TABLE __tds_columns",
    ):
        assert refused(admin, sql).number in (208, 3701)


def test_authorizer_denies_writes_for_read_only() -> None:
    authorizer = Authorizer(Principal("analyst", "read-only"))
    deny, ok = sqlite3.SQLITE_DENY, sqlite3.SQLITE_OK
    assert authorizer(sqlite3.SQLITE_READ, "orders", "id", "main", None) == ok
    for action in (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE):
        assert authorizer(action, "orders", None, "main", None) == deny
    for action in (
        sqlite3.SQLITE_CREATE_TABLE,
        sqlite3.SQLITE_DROP_TABLE,
        sqlite3.SQLITE_ALTER_TABLE,
    ):
        assert authorizer(action, "orders", None, "main", None) == deny
    for action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_PRAGMA, sqlite3.SQLITE_DETACH):
        assert authorizer(action, "x", None, None, None) == deny
    assert authorizer(sqlite3.SQLITE_READ, "__tds_columns", "tbl", "main", None) == deny
    assert authorizer.denied == ("SELECT", "__tds_columns")


def test_authorizer_on_a_real_connection() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE orders (id INT)")
    conn.execute("INSERT INTO orders VALUES (1)")
    conn.set_authorizer(Authorizer(Principal("analyst", "read-only")))
    assert conn.execute("SELECT COUNT(*) FROM orders").fetchone() == (1,)
    for sql in (
        "DELETE FROM orders",
        "INSERT INTO orders VALUES (2)",
        "UPDATE orders SET id = 3",
        "DROP TABLE orders",
        "CREATE TABLE x (a)",
        "ATTACH DATABASE ':memory:' AS other",
        "PRAGMA writable_schema = ON",
        "WITH t AS (SELECT 1) INSERT INTO orders SELECT * FROM t",
    ):
        with pytest.raises(sqlite3.DatabaseError, match="not authorized|prohibited"):
            conn.execute(sql)
    conn.close()


def test_pure_read_only_login_gets_a_query_only_connection(engine: Engine) -> None:
    engine.users["viewer"] = User("viewer", "v-pw", "read-only", "analyst")
    session = login(engine, "viewer", "v-pw")
    raw = session._conn  # below the statement check and the authorizer
    raw.set_authorizer(None)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        raw.execute("DELETE FROM orders")
    assert order_count(engine) == 60
    # analyst_ro may impersonate a writer, so its connection cannot be query-only.
    assert run(login(engine, "analyst_ro", "ro-pw"), "SELECT COUNT(*) FROM orders") == [[(60,)]]


def test_authorizer_blocks_writes_even_if_the_statement_check_is_bypassed(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Principal, "check", lambda self, **kwargs: None)
    session = login(engine, "analyst_ro", "ro-pw")
    for sql in (
        "DELETE FROM orders",
        "UPDATE orders SET amount = 0",
        "CREATE TABLE evil (a int)",
        "DROP TABLE orders",
    ):
        error = refused(session, sql)
        assert error.number in (229, 262), error.message
    assert order_count(engine) == 60
    admin = login(engine, "sa", "admin-pw")
    assert run(admin, "SELECT COUNT(*) FROM customers") == [[(24,)]]


def test_execute_as_user_and_revert(engine: Engine) -> None:
    session = login(engine, "analyst_ro", "ro-pw")
    assert session.effective_user == "analyst"
    assert refused(session, "DELETE FROM orders WHERE id = 1").number == 229
    results = run(
        session,
        "EXECUTE AS USER = 'app'; SELECT USER_NAME(), SUSER_NAME();"
        " DELETE FROM orders WHERE id = 1",
    )
    assert results[0] == [("app", "analyst_ro")]
    assert session.effective_user == "app"
    assert order_count(engine) == 59
    run(session, "REVERT")
    assert session.effective_user == "analyst"
    assert refused(session, "DELETE FROM orders WHERE id = 3").number == 229
    run(session, "REVERT")  # nothing left to revert: stays the login's user
    assert session.effective_user == "analyst"


def test_execute_as_is_limited_to_allowed_users(engine: Engine) -> None:
    session = login(engine, "analyst_ro", "ro-pw")
    for target in ("dbo", "nobody"):
        error = refused(session, f"EXECUTE AS USER = '{target}'")
        assert error.number == 15517
        assert f'"{target}"' in error.message
    assert refused(session, "EXECUTE AS LOGIN = 'sa'").number == 15406
    rw = login(engine, "app_rw", "rw-pw")
    assert refused(rw, "EXECUTE AS USER = 'analyst'").number == 15517


def test_impersonated_grants_apply(engine: Engine) -> None:
    session = login(engine, "analyst_ro", "ro-pw")
    run(session, "EXECUTE AS USER = 'orders_clerk'")
    assert refused(session, "SELECT * FROM products").number == 229
    run(session, "DELETE FROM orders WHERE id = 5")
    assert order_count(engine) == 59


def test_session_context_and_read_only_keys(engine: Engine) -> None:
    session = login(engine, "app_rw", "rw-pw")
    run(
        session,
        "EXEC sp_set_session_context @key = N'customer_id', @value = 7, @read_only = 1;"
        "EXEC sp_set_session_context N'note', N'first';"
        " EXEC sp_set_session_context N'note', N'second'",
    )
    results = run(
        session,
        "SELECT SESSION_CONTEXT(N'customer_id'), SESSION_CONTEXT(N'note'),"
        " SESSION_CONTEXT(N'none');"
        "SELECT COUNT(*) FROM orders WHERE customer_id = SESSION_CONTEXT(N'customer_id')",
    )
    assert results[0] == [(7, "second", None)]
    ((mine,),) = results[1]  # type: ignore[misc]
    assert mine == run(session, "SELECT COUNT(*) FROM orders WHERE customer_id = 7")[0][0][0]  # type: ignore[index]
    error = refused(session, "EXEC sp_set_session_context @key = N'customer_id', @value = 8")
    assert error.number == 15664
    assert "customer_id" in error.message
    assert run(session, "SELECT SESSION_CONTEXT(N'customer_id')") == [[(7,)]]
    run(session, "EXEC sys.sp_set_session_context N'note', NULL")  # NULL removes a key
    assert run(session, "SELECT SESSION_CONTEXT(N'note')") == [[(None,)]]


def test_session_context_from_parameters(engine: Engine) -> None:
    session = login(engine, "app_rw", "rw-pw")
    params = (
        Param("@P1", SqlType("nvarchar", length=-1), "tenant"),
        Param("@P2", SqlType("nvarchar", length=-1), "acme"),
        Param("@P3", SqlType("bit"), True),
    )
    run(session, "EXEC sp_set_session_context @key=@P1, @value=@P2, @read_only=@P3", params)
    assert run(session, "SELECT SESSION_CONTEXT(N'tenant')") == [[("acme",)]]
    assert refused(session, "EXEC sp_set_session_context N'tenant', N'other'").number == 15664


def test_reset_reverts_impersonation_and_clears_context(engine: Engine) -> None:
    session = login(engine, "analyst_ro", "ro-pw")
    run(session, "EXECUTE AS USER = 'app'; EXEC sp_set_session_context N'k', 1, 1; BEGIN TRAN")
    session.reset()
    assert session.effective_user == "analyst"
    assert not session.in_transaction
    assert run(session, "SELECT SESSION_CONTEXT(N'k'), USER_NAME()") == [[(None, "analyst")]]
    run(session, "EXEC sp_set_session_context N'k', 2, 1")  # read-only keys are gone after reset
    assert refused(session, "DELETE FROM orders").number == 229
    run(session, "EXEC sp_reset_connection")
    assert run(session, "SELECT SESSION_CONTEXT(N'k')") == [[(None,)]]


def test_load_users(users: dict[str, User]) -> None:
    assert set(users) == {"sa", "app_rw", "analyst_ro", "clerk"}
    assert users["analyst_ro"].role == "read-only"
    assert users["analyst_ro"].can_impersonate == ("app", "orders_clerk")
    assert users["clerk"].password is None
    assert users["clerk"].grants == {"orders": "write", "customers": "read"}
    assert "ro-pw" not in repr(users["analyst_ro"])


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[users.a]\nrole = "boss"\n', "users.a.role"),
        ('[users.a]\nrole = "admin"\npasword = "x"\n', "pasword"),
        ('[users.a]\nrole = "read-only"\ngrants = { t = "write" }\n', "users.a.grants.t"),
        ('[users.a]\nrole = "read-only"\ncan_impersonate = ["ghost"]\n', "users.a.can_impersonate"),
        ('[users.a]\nrole = "admin"\ndatabase_user = "u"\n'
         '[users.b]\nrole = "read-only"\ndatabase_user = "u"\n',
         "users.b"),
        ("[users.a\n", "not valid TOML"),
        ("[other]\n", "other"),
    ],
)  # fmt: skip
def test_load_users_names_the_bad_key(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "users.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(UsersFileError) as caught:
        load_users(path)
    assert key in str(caught.value)
    assert str(path) in str(caught.value)
