"""tdslite engine: batches, statements, transactions, errors, streaming and cancel."""

from __future__ import annotations

import itertools
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tdslite.engine import Engine, Param, ResultSet, RowCount, Session, SqlError, SqlType, User

ADMIN = User(login="sa", password="pw", role="admin", database_user="dbo")


@pytest.fixture(scope="module")
def seeded_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample database, seeded once per module (each test gets a copy)."""
    path = tmp_path_factory.mktemp("seed") / "sample.sqlite"
    Engine(path, {"sa": ADMIN}, seed="sample").close()
    return path


@pytest.fixture
def engine(seeded_file: Path, tmp_path: Path) -> Iterator[Engine]:
    copy = tmp_path / "sample.sqlite"
    shutil.copyfile(seeded_file, copy)
    engine = Engine(copy, {"sa": ADMIN}, database="sample")
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture
def session(engine: Engine) -> Session:
    return engine.open_session(ADMIN)


def run(session: Session, sql: str, params: tuple[Param, ...] = ()) -> list[object]:
    """Each result of the batch: a list of rows for a result set, or the RowCount."""
    out: list[object] = []
    for result in session.execute(sql, params):
        out.append(list(result.rows) if isinstance(result, ResultSet) else result)
    return out


def error_of(session: Session, sql: str) -> SqlError:
    with pytest.raises(SqlError) as caught:
        run(session, sql)
    return caught.value


def test_several_statements_per_batch_each_yield_a_result(session: Session) -> None:
    results = run(
        session,
        "SELECT 1 SELECT 2;\nINSERT INTO products (name, category, price) VALUES (N'x', N'y', 1)"
        "\nSELECT @@ROWCOUNT; UPDATE products SET price = 2 WHERE name = N'x' DELETE products"
        " WHERE name = N'x'",
    )
    assert results == [[(1,)], [(2,)], RowCount(1), [(1,)], RowCount(1), RowCount(1)]


def test_sample_seed_schema(session: Session) -> None:
    counts = run(
        session,
        "SELECT COUNT(*) FROM customers; SELECT COUNT(*) FROM orders;"
        " SELECT COUNT(*) FROM products;"
        "SELECT COUNT(*) FROM all_types",
    )
    assert counts == [[(24,)], [(60,)], [(12,)], [(2,)]]
    (rows,) = run(
        session,
        "SELECT c.region, COUNT(*), SUM(o.amount) FROM orders o"
        " JOIN customers c ON c.id = o.customer_id"
        " GROUP BY c.region HAVING COUNT(*) > 0 ORDER BY c.region",
    )
    assert [r[0] for r in rows] == ["east", "north", "south", "west"]
    assert sum(r[1] for r in rows) == 60


def test_queries_joins_ctes_subqueries_top_offset(session: Session) -> None:
    (top,) = run(session, "SELECT TOP 2 id FROM customers ORDER BY id DESC")
    assert top == [(24,), (23,)]
    (page,) = run(
        session, "SELECT id FROM customers ORDER BY id OFFSET 3 ROWS FETCH NEXT 2 ROWS ONLY"
    )
    assert page == [(4,), (5,)]
    (cte,) = run(
        session,
        "WITH spend AS (SELECT customer_id, SUM(amount) AS total FROM orders GROUP BY customer_id)"
        " SELECT COUNT(*) FROM spend s WHERE s.total > (SELECT AVG(total) FROM spend)",
    )
    assert 0 < cte[0][0] < 24
    (exists,) = run(
        session,
        "SELECT COUNT(*) FROM customers c"
        " WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id)"
        " AND c.id IN (SELECT customer_id FROM orders WHERE status = 'paid')",
    )
    assert exists[0][0] > 0
    (left,) = run(
        session,
        "SELECT COUNT(*) FROM customers c LEFT JOIN orders o ON o.customer_id = c.id"
        " WHERE o.id IS NULL",
    )
    assert left[0][0] >= 0


def test_identity_scope_identity_and_rowcount(session: Session) -> None:
    results = run(
        session,
        "INSERT INTO customers (name, email, region)"
        " VALUES (N'A', N'a@x', N'north'), (N'B', N'b@x', N'east');"
        "SELECT @@ROWCOUNT, SCOPE_IDENTITY(), @@IDENTITY;"
        "SELECT name FROM customers WHERE id = SCOPE_IDENTITY()",
    )
    assert results[0] == RowCount(2)
    assert results[1] == [(2, 26, 26)]
    assert results[2] == [("B",)]


def test_output_inserted(session: Session) -> None:
    results = list(
        session.execute(
            "INSERT INTO products (name, category, price) OUTPUT inserted.id, INSERTED.price AS p"
            " VALUES (N'a', N'b', 1.5), (N'c', N'd', 2);"
            "UPDATE products SET price = price * 2 OUTPUT inserted.* WHERE id = 13"
        )
    )
    inserted, count, updated, count2 = results
    assert isinstance(inserted, ResultSet)
    assert [(c.name, str(c.type)) for c in inserted.columns] == [
        ("id", "int"),
        ("p", "decimal(10,2)"),
    ]
    assert list(inserted.rows) == [(13, Decimal("1.50")), (14, Decimal("2.00"))]
    assert count == RowCount(2)
    assert isinstance(updated, ResultSet)
    assert list(updated.rows) == [(13, "a", "b", Decimal("3.00"), True)]
    assert count2 == RowCount(1)


def test_update_from_joins(session: Session) -> None:
    results = run(
        session,
        "UPDATE o SET o.status = N'vip' FROM orders o JOIN customers c ON c.id = o.customer_id"
        " WHERE c.region = 'north';"
        "SELECT COUNT(*) FROM orders o JOIN customers c ON c.id = o.customer_id"
        " WHERE c.region = 'north' AND o.status = 'vip';"
        "SELECT amount + p.price FROM orders JOIN products p ON p.id = orders.product_id"
        " WHERE orders.id = 1;"
        "UPDATE orders SET amount = amount + p.price FROM products p"
        " WHERE p.id = orders.product_id AND orders.id = 1;"
        "SELECT amount FROM orders WHERE id = 1",
    )
    assert results[0] == RowCount(14)
    assert results[1] == [(14,)]
    assert results[3] == RowCount(1)
    assert results[4] == results[2]
    assert (
        error_of(
            session, "UPDATE o SET status = N'x' FROM orders o LEFT JOIN products p ON 1 = 1"
        ).number
        == 40517
    )


def test_create_table_identity_default_not_null(session: Session) -> None:
    run(
        session,
        "CREATE TABLE dbo.notes (id bigint IDENTITY(100,1) PRIMARY KEY, body nvarchar(20) NOT NULL,"
        " made datetime2(0) NOT NULL DEFAULT SYSDATETIME(), flag bit DEFAULT 1)",
    )
    assert run(session, "INSERT INTO notes (body) VALUES (N'hello')") == [RowCount(1)]
    ((row,),) = run(session, "SELECT id, body, flag, YEAR(made) FROM notes")
    assert row[:3] == (100, "hello", True)
    assert row[3] >= 2024
    assert error_of(session, "INSERT INTO notes (body) VALUES (NULL)").number == 515
    assert error_of(session, "INSERT INTO notes (id, body) VALUES (5, N'x')").number == 544
    assert (
        error_of(session, "INSERT INTO notes (body) VALUES (N'this is far too long for it')").number
        == 2628
    )
    assert error_of(session, "CREATE TABLE notes (a int)").number == 2714
    run(
        session,
        "CREATE UNIQUE NONCLUSTERED INDEX ux_body ON notes (body)"
        " CREATE INDEX ix ON notes (made DESC)",
    )
    assert error_of(session, "INSERT INTO notes (body) VALUES (N'hello')").number == 2627
    run(session, "DROP TABLE notes")
    assert error_of(session, "SELECT * FROM notes").number == 208


@pytest.mark.parametrize(
    ("sql", "number", "severity"),
    [
        ("SELEC 1", 102, 15),
        ("SELECT 'unclosed", 105, 15),
        ("SELECT * FROM missing_table", 208, 16),
        ("SELECT * FROM otherdb.dbo.customers", 208, 16),
        ("SELECT nope FROM customers", 207, 16),
        ("SELECT c.nope FROM customers c", 207, 16),
        ("SELECT id FROM customers, orders", 209, 16),
        ("INSERT INTO all_types (id) VALUES (1)", 2627, 14),
        ("INSERT INTO customers (name, email) VALUES (N'a', N'b')", 515, 16),
        ("SELECT 1 / 0", 8134, 16),
        ("SELECT 5 % 0", 8134, 16),
        ("SELECT id / (id - id) FROM customers", 8134, 16),
        ("EXEC sp_does_not_exist", 2812, 16),
        ("COMMIT", 3902, 16),
        ("ROLLBACK", 3903, 16),
        ("SELECT @undeclared", 137, 15),
        ("USE model", 911, 16),
        ("SELECT NOSUCHFUNC(1)", 195, 15),
        ("SELECT '\ud800'", 102, 15),
        ("SELECT sqlite_version()", 195, 15),
        ("SELECT load_extension('x')", 195, 15),
        ("DECLARE @__g_user nvarchar(10) = N'dbo'", 102, 15),
    ],
)
def test_errors_carry_sql_server_numbers(
    session: Session, sql: str, number: int, severity: int
) -> None:
    error = error_of(session, sql)
    assert (error.number, error.severity) == (number, severity), error.message
    assert error.message


def test_pk_violation_message_names_constraint_and_table(session: Session) -> None:
    error = error_of(session, "INSERT INTO all_types (id) VALUES (2)")
    assert "PRIMARY KEY constraint 'PK_all_types'" in error.message
    assert "dbo.all_types" in error.message


def test_divide_by_zero_in_a_later_row_raises_while_streaming(session: Session) -> None:
    # No ORDER BY: SQLite computes each row as it is stepped.
    (result,) = list(session.execute("SELECT 10 / (id - 3) FROM customers WHERE id < 10"))
    assert isinstance(result, ResultSet)
    assert next(result.rows) == (-5,)  # id 1
    # sqlite3 steps one row ahead, so the error of row 3 may surface with row 2.
    with pytest.raises(SqlError) as caught:
        list(itertools.islice(result.rows, 2))
    assert caught.value.number == 8134


def test_syntax_error_anywhere_runs_nothing(session: Session) -> None:
    with pytest.raises(SqlError) as caught:
        session.execute("DELETE FROM orders; SELECT FROM WHERE")
    assert caught.value.number == 102
    assert run(session, "SELECT COUNT(*) FROM orders") == [[(60,)]]


def test_error_ends_the_batch_and_reports_its_line(session: Session) -> None:
    results = session.execute("SELECT 1\nSELECT * FROM nope\nDELETE FROM orders")
    assert list(next(results).rows) == [(1,)]  # type: ignore[union-attr]
    with pytest.raises(SqlError) as caught:
        next(results)
    assert (caught.value.number, caught.value.line) == (208, 2)
    assert run(session, "SELECT COUNT(*) FROM orders") == [[(60,)]]


def test_statements_run_only_when_the_iterator_reaches_them(session: Session) -> None:
    results = session.execute("SELECT 1; DELETE FROM orders")
    list(next(results).rows)  # type: ignore[union-attr]
    del results  # the client stopped (e.g. ATTENTION): the DELETE never runs
    assert run(session, "SELECT COUNT(*) FROM orders") == [[(60,)]]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM customers FOR JSON PATH",
        "SELECT * FROM customers FOR XML AUTO",
        "MERGE INTO customers USING products ON 1 = 0 WHEN MATCHED THEN DELETE;",
        "IF 1 = 1 DELETE FROM orders; GOTO done",
        "WHILE 1 = 1 DELETE FROM orders; MERGE INTO customers USING products ON 1 = 0",
        "BEGIN TRY DELETE FROM orders END TRY BEGIN CATCH SELECT 1 END",
        "SELECT * FROM OPENROWSET('SQLNCLI', 'x', 'SELECT 1')",
        "SELECT NEXT VALUE FOR seq",
        "SELECT TOP 10 PERCENT * FROM orders",
        "SELECT a FROM (SELECT 1) AS t(a)",
        "UPDATE p SET price = 1 OUTPUT deleted.price FROM products p JOIN orders o"
        " ON o.product_id = p.id",
        "DELETE FROM orders OUTPUT deleted.id INTO customers WHERE id = 1",
        "DELETE FROM orders OUTPUT deleted.id + 1 WHERE id = 1",
        "SELECT FORMAT(amount, 'N2') FROM orders",
        "SET IMPLICIT_TRANSACTIONS ON",
        "EXEC ('DELETE FROM orders')",
        "SELECT * FROM orders OPTION (RECOMPILE)",
        "GRANT SELECT ON orders TO public",
        "DELETE FROM orders; WAITFOR TIME '10:00'",
        "SELECT 1; BEGIN DIALOG x",
    ],
)
def test_unsupported_constructs_raise_and_nothing_runs(session: Session, sql: str) -> None:
    error = error_of(session, sql)
    assert error.number in (40517, 102, 195), error.message
    assert run(session, "SELECT COUNT(*) FROM orders") == [[(60,)]]


def test_transactions_nest_commit_and_roll_back(session: Session) -> None:
    results = run(
        session,
        "BEGIN TRAN; BEGIN TRANSACTION; SELECT @@TRANCOUNT; DELETE FROM orders; COMMIT;"
        " SELECT @@TRANCOUNT; ROLLBACK; SELECT @@TRANCOUNT, COUNT(*) FROM orders",
    )
    assert results == [[(2,)], RowCount(60), [(1,)], [(0, 60)]]
    assert not session.in_transaction
    session.begin()
    run(session, "DELETE FROM orders WHERE id = 1")
    assert session.in_transaction
    session.commit()
    assert run(session, "SELECT COUNT(*) FROM orders") == [[(59,)]]


def test_failed_statement_inside_transaction_keeps_earlier_work(session: Session) -> None:
    session.begin()
    run(session, "DELETE FROM orders WHERE id = 1")
    with pytest.raises(SqlError):
        run(session, "INSERT INTO all_types (id) VALUES (1)")
    assert session.in_transaction
    session.rollback()
    assert run(session, "SELECT COUNT(*) FROM orders") == [[(60,)]]


def test_sessions_are_isolated_until_commit(engine: Engine, session: Session) -> None:
    other = engine.open_session(ADMIN)
    session.begin()
    run(session, "UPDATE products SET price = 99 WHERE id = 1")
    # READ COMMITTED: a reader waits for the uncommitted write (here: no wait, 1222) ...
    assert error_of(other, "SET LOCK_TIMEOUT 0; SELECT price FROM products").number == 1222
    # ... NOLOCK reads the last committed value
    assert run(other, "SELECT price FROM products WITH (NOLOCK) WHERE id = 1") != [[(99,)]]
    session.commit()
    ((row,),) = run(other, "SELECT price FROM products WHERE id = 1")
    assert row[0] == 99


def test_variables_declare_set_and_select_assignment(session: Session) -> None:
    results = run(
        session,
        "DECLARE @n int = 3, @name nvarchar(50); SET @name = N'Ada' + N'!';"
        " SELECT @n * 2, @name; SELECT @n = COUNT(*) FROM orders WHERE status = @status_p;"
        " SELECT @n",
        (Param("@status_p", SqlType("nvarchar", length=-1), "paid"),),
    )
    assert results[0] == [(6, "Ada!")]
    assert results[1] == RowCount(1, select=True)  # SELECT @n = ... reads one row
    assert results[2][0][0] > 0  # type: ignore[index]
    assert error_of(session, "DECLARE @a int; DECLARE @a int").number == 134


def test_session_functions(engine: Engine, session: Session) -> None:
    ((row,),) = run(
        session,
        "SELECT @@VERSION, DB_NAME(), SUSER_NAME(), USER_NAME(), @@SPID, @@TRANCOUNT, GETDATE(),"
        " SYSDATETIMEOFFSET(), NEWID()",
    )
    assert str(row[0]).startswith("Microsoft SQL Server")
    assert row[1:6] == ("sample", "sa", "dbo", session.spid, 0)
    assert row[8] != run(session, "SELECT NEWID()")[0][0][0]  # type: ignore[index]


def test_set_options_clients_send_are_accepted(session: Session) -> None:
    batch = (
        "set textsize 2147483647 set ansi_nulls on set ansi_padding on set ansi_warnings on"
        " set arithabort on set concat_null_yields_null on set quoted_identifier on"
        " set language us_english set dateformat mdy set datefirst 7"
        " set transaction isolation level read committed set xact_abort off set nocount on"
        " SET ANSI_NULL_DFLT_ON, IMPLICIT_TRANSACTIONS OFF; USE sample; USE [sample]"
    )
    assert run(session, batch) == []
    assert session.nocount
    assert error_of(session, "SET SHOWPLAN_XML ON").number == 40517


def test_rows_are_streamed_lazily(session: Session) -> None:
    run(session, "CREATE TABLE big (n int PRIMARY KEY, pad nvarchar(20))")
    run(
        session,
        "WITH RECURSIVE_DIGITS AS (SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL"
        " SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7"
        " UNION ALL SELECT 8 UNION ALL SELECT 9)"
        " INSERT INTO big (n, pad) SELECT a.d + 10 * b.d + 100 * c.d + 1000 * d.d + 10000 * e.d"
        " + 100000 * f.d, N'row' FROM RECURSIVE_DIGITS a, RECURSIVE_DIGITS b, RECURSIVE_DIGITS c,"
        " RECURSIVE_DIGITS d, RECURSIVE_DIGITS e, RECURSIVE_DIGITS f WHERE f.d < 2",
    )
    (result,) = list(session.execute("SELECT n, pad FROM big ORDER BY n"))
    assert isinstance(result, ResultSet)
    # A generator, not a list: rows are produced one at a time from SQLite's cursor.
    assert not isinstance(result.rows, list | tuple)
    assert hasattr(result.rows, "gi_frame")
    first = [next(result.rows) for _ in range(3)]
    assert first == [(0, "row"), (1, "row"), (2, "row")]
    # SQLite has stepped only a few rows: the cursor is still open mid-result.
    assert result.rows.gi_frame is not None  # type: ignore[attr-defined]
    count = 3 + sum(1 for _ in result.rows)
    assert count == 200_000
    assert run(session, "SELECT @@ROWCOUNT") == [[(200_000,)]]


def test_cancel_interrupts_a_running_statement(session: Session) -> None:
    run(session, "CREATE TABLE slow (n int PRIMARY KEY)")
    run(session, "INSERT INTO slow VALUES (1), (2), (3), (4), (5), (6), (7), (8), (9), (10)")
    heavy = (
        "SELECT COUNT(*) FROM slow a, slow b, slow c, slow d, slow e, slow f, slow g, slow h,"
        " slow i, slow j"
    )
    outcome: list[object] = []

    def worker() -> None:
        try:
            outcome.append(run(session, heavy))
        except SqlError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    deadline = time.monotonic() + 10
    while thread.is_alive() and time.monotonic() < deadline:
        session.cancel()
        thread.join(0.05)
    assert not thread.is_alive()
    assert isinstance(outcome[0], SqlError)
    assert outcome[0].number == 3617
    assert run(session, "SELECT 1") == [[(1,)]]  # the session still works


def test_reset_rolls_back_and_clears_state(session: Session) -> None:
    run(session, "BEGIN TRAN; DELETE FROM orders; SET NOCOUNT ON")
    session.reset()
    assert not session.in_transaction
    assert not session.nocount
    assert run(session, "SELECT COUNT(*), @@TRANCOUNT FROM orders") == [[(60, 0)]]


def test_authenticate(engine: Engine) -> None:
    assert engine.authenticate("sa", "pw") is ADMIN
    for login, password in [("sa", "wrong"), ("nobody", "pw"), ("sa", "")]:
        with pytest.raises(SqlError) as caught:
            engine.authenticate(login, password)
        error = caught.value
        assert (error.number, error.severity) == (18456, 14)
        assert error.message == f"Login failed for user '{login}'."


def test_open_session_other_database_is_refused(engine: Engine) -> None:
    with pytest.raises(SqlError) as caught:
        engine.open_session(ADMIN, database="model")
    assert caught.value.number == 4060
    assert engine.open_session(ADMIN, database="SAMPLE").database == "sample"


def test_file_database_persists_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    first = Engine(path, {"sa": ADMIN})
    session = first.open_session(ADMIN)
    run(
        session,
        "CREATE TABLE kept (id int PRIMARY KEY, d decimal(9,3)); INSERT INTO kept VALUES (1, 1.5)",
    )
    first.close()
    second = Engine(path, {"sa": ADMIN})
    try:
        again = second.open_session(ADMIN)
        ((row,),) = run(again, "SELECT d FROM kept")
        assert str(row[0]) == "1.500"
        assert second.database == "db"
    finally:
        second.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unpaired_surrogate_parameter_is_an_error_not_a_crash(session: Session) -> None:
    with pytest.raises(SqlError) as caught:
        run(session, "SELECT @p", (Param("@p", SqlType("nvarchar", length=-1), "a\ud800"),))
    assert caught.value.number == 8016
