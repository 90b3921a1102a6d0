"""tdslite engine: the T-SQL that ORMs write (Kysely's MssqlDialect, Prisma's SQL Server client).

OUTPUT DELETED / OUTPUT ... INTO a table variable, DELETE FROM t OUTPUT ..., `@1` parameter
names, DEFAULT in a multi-row VALUES, qualified INSERT column lists, named and CLUSTERED table
constraints, OFFSET/FETCH/TOP/LIMIT as SQL Server reads them. The real libraries run against a
tdslite server in tests/tdslite/orm/.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tdslite.engine import Engine, Param, RowCount, Session, SqlType, User
from tests.tdslite.test_engine_sql import error_of, run

ADMIN = User(login="sa", password="pw", role="admin", database_user="dbo")


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    """A session of an engine seeded with the sample schema (customers, products, orders)."""
    engine = Engine(tmp_path / "sample.sqlite", {"sa": ADMIN}, seed="sample")
    try:
        yield engine.open_session(ADMIN)
    finally:
        engine.close()


def test_output_deleted_on_update_and_delete(session: Session) -> None:
    results = run(
        session,
        "UPDATE products SET price = price + 1, name = N'new' OUTPUT deleted.price AS old_price,"
        " inserted.price, DELETED.name AS old_name, inserted.name WHERE id IN (1, 2);"
        "UPDATE products SET price = 0 OUTPUT deleted.* WHERE id = 3;"
        "DELETE FROM orders OUTPUT deleted.id, deleted.amount WHERE id IN (1, 2);"
        "DELETE FROM [dbo].[orders] OUTPUT [Deleted].* WHERE 1 = 0",
    )
    assert results == [
        [
            (Decimal("4.99"), Decimal("5.99"), "Widget", "new"),
            (Decimal("12.50"), Decimal("13.50"), "Gadget", "new"),
        ],
        RowCount(2),
        [(3, "Doohickey", "widgets", Decimal("0.75"), True)],
        RowCount(1),
        [(1, Decimal("27.00")), (2, Decimal("3.75"))],
        RowCount(2),
        [],
        RowCount(0),
    ]
    assert run(session, "SELECT COUNT(*) FROM orders WHERE id IN (1, 2)") == [[(0,)]]


def test_output_into_table_variable_prisma_insert(session: Session) -> None:
    """Prisma's INSERT: the new key goes to a table variable, read back with @@ROWCOUNT."""
    params = (
        Param("@P1", SqlType("nvarchar", length=4000), "Zoë 😀"),
        Param("@P2", SqlType("nvarchar", length=4000), "12.345"),
    )
    results = run(
        session,
        "DECLARE @generated_keys table([id] BIGINT) INSERT INTO [dbo].[products] ([name],[price],"
        "[category]) OUTPUT [Inserted].[id] INTO @generated_keys VALUES (@P1,@P2,N'c')"
        " SELECT [t].[id], [t].[name], [t].[price] FROM @generated_keys AS g"
        " INNER JOIN [dbo].[products] AS [t] ON [t].[id] = [g].[id] WHERE @@ROWCOUNT > 0",
        params,
    )
    assert results == [RowCount(1), [(13, "Zoë 😀", Decimal("12.35"))]]
    deleted = run(
        session,
        "DECLARE @gone TABLE (id int, amount decimal(12,2)); DELETE FROM orders OUTPUT"
        " deleted.id, deleted.amount INTO @gone WHERE id <= 3; SELECT COUNT(*), MIN(id) FROM @gone",
    )
    assert deleted == [RowCount(3), [(3, 1)]]
    # as SQL Server: the target's columns must match (213), INSERT has no DELETED (4104)
    wrong = "DECLARE @k TABLE (a int, b int); INSERT INTO products (name, category) OUTPUT"
    assert error_of(session, wrong + " inserted.id INTO @k VALUES (N'x', N'y')").number == 213
    assert (
        error_of(session, "INSERT INTO products (name) OUTPUT deleted.id VALUES (N'x')").number
        == 4104
    )
    assert error_of(session, "DELETE FROM products OUTPUT inserted.id WHERE id = 1").number == 4104


def test_numbered_parameters_and_qualified_insert_columns(session: Session) -> None:
    """Kysely names its parameters @1, @2 (tedious sends them so); Prisma qualifies the
    columns of a multi-row INSERT with the table."""
    params = (Param("@1", SqlType("int"), 3), Param("@2", SqlType("nvarchar", length=10), "n"))
    assert run(session, "SELECT COUNT(*) FROM customers WHERE id <= @1 AND region LIKE @2 + '%'",
               params) == [[(1,)]]  # fmt: skip
    results = run(
        session,
        "INSERT INTO [dbo].[products] ([dbo].[products].[name], products.category,"
        " [products].[price]) VALUES (N'a', N'c', 1), (N'b', N'c', 2);"
        "SELECT name FROM products WHERE category = N'c' ORDER BY name",
    )
    assert results == [RowCount(2), [("a",), ("b",)]]


def test_default_in_values(session: Session) -> None:
    results = run(
        session,
        "INSERT INTO products (name, category, price, in_stock) OUTPUT inserted.name,"
        " inserted.in_stock VALUES (N'a', N'x', 1, DEFAULT), (N'b', N'y', 2, 0);"
        "SELECT @@ROWCOUNT",
    )
    assert results == [[("a", True), ("b", False)], RowCount(2), [(2,)]]
    run(session, "CREATE TABLE #d (id int IDENTITY(1,1) PRIMARY KEY, v int DEFAULT 7, w int)")
    inserted = run(session, "INSERT INTO #d (v, w) VALUES (DEFAULT, DEFAULT), (1, 2)")
    assert inserted == [RowCount(2)]
    assert run(session, "SELECT id, v, w FROM #d ORDER BY id") == [[(1, 7, None), (2, 1, 2)]]
    # a NOT NULL column without a default: 515, as in SQL Server
    no_default = "INSERT INTO products (name, category, price) VALUES (N'c', N'z', DEFAULT)"
    assert error_of(session, no_default).number == 515


def test_prisma_migration_table_constraints(session: Session) -> None:
    run(
        session,
        "CREATE TABLE [dbo].[Author] ([id] INT NOT NULL IDENTITY(1,1), [email] NVARCHAR(200)"
        " NOT NULL, CONSTRAINT [Author_pkey] PRIMARY KEY CLUSTERED ([id]),"
        " CONSTRAINT [Author_email_key] UNIQUE NONCLUSTERED ([email]));"
        "CREATE TABLE [dbo].[Post] ([id] INT NOT NULL IDENTITY(1,1), [views] INT NOT NULL"
        " CONSTRAINT [Post_views_df] DEFAULT 0, [authorId] INT NOT NULL, CONSTRAINT [Post_pkey]"
        " PRIMARY KEY CLUSTERED ([id]), CONSTRAINT [Post_authorId_fkey] FOREIGN KEY ([authorId])"
        " REFERENCES [dbo].[Author]([id]) ON DELETE NO ACTION ON UPDATE CASCADE)",
    )
    run(
        session,
        "INSERT INTO Author (email) VALUES (N'a@x'); INSERT INTO Post (authorId) VALUES (1)",
    )
    assert error_of(session, "INSERT INTO Author (email) VALUES (N'A@X')").number == 2627
    assert error_of(session, "INSERT INTO Post (authorId) VALUES (9)").number == 547
    assert run(session, "SELECT views FROM Post") == [[(0,)]]


def test_offset_fetch_top_limit_as_sql_server(session: Session) -> None:
    params = (Param("@P1", SqlType("int"), 1), Param("@P2", SqlType("int"), 2))
    assert run(
        session,
        "SELECT id FROM customers ORDER BY id OFFSET @P1 ROWS FETCH NEXT @P2 ROWS ONLY;"
        "SELECT TOP (@P2) id FROM customers ORDER BY id",
        params,
    ) == [[(2,), (3,)], [(1,), (2,)]]
    assert error_of(session, "SELECT id FROM customers OFFSET 1 ROWS").number == 102
    assert error_of(session, "SELECT id FROM customers ORDER BY id LIMIT 2").number == 102


def test_update_and_delete_top(session: Session) -> None:
    """``UPDATE | DELETE TOP (n)`` (Kysely's top() on updateTable/deleteFrom): n rows of those
    the WHERE picks."""
    params = (Param("@1", SqlType("int"), 2),)
    results = run(
        session,
        'update top(@1) "orders" set "status" = N\'held\' output deleted.id, inserted.status'
        ' where "customer_id" > 0; DELETE TOP (1) FROM orders OUTPUT deleted.status'
        " WHERE status = N'held'; DELETE TOP (3) orders WHERE status <> N'held';"
        "SELECT COUNT(*) FROM orders; SELECT COUNT(*) FROM orders WHERE status = N'held'",
        params,
    )
    assert results == [
        [(1, "held"), (2, "held")],
        RowCount(2),
        [("held",)],
        RowCount(1),
        RowCount(3),
        [(56,)],
        [(1,)],
    ]
    joined = "UPDATE TOP (1) o SET status = N'x' FROM orders o JOIN customers c ON c.id = o.id"
    assert error_of(session, joined).number == 40517
