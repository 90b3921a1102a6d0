"""The control-flow engine without a client: how a batch is cut and put together, the compile
errors that stop a batch before anything runs, and RAISERROR's message formatting."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tdslite.engine import Info, ResultSet, Session, SqlError, StatementFailed
from tdslite.engine._batch import split_batch
from tdslite.engine._printf import format_message
from tests.support.engine import admin_session


@pytest.fixture
def session() -> Iterator[Session]:
    with admin_session() as session:
        yield session


def run(session: Session, sql: str) -> list[Any]:
    out: list[Any] = []
    for result in session.execute(sql):
        if isinstance(result, ResultSet):
            out.append([tuple(r) for r in result.rows])
        elif isinstance(result, StatementFailed | Info):
            out.append((type(result).__name__, result.error.number))
    return out


@pytest.mark.parametrize(
    ("sql", "keywords"),
    [
        # END and ELSE of a CASE expression belong to their statement.
        (
            "IF 1 = 1 SELECT CASE WHEN 1 = 1 THEN 'a' ELSE 'b' END ELSE SELECT 2",
            ["IF", "SELECT", "ELSE", "SELECT"],
        ),
        ("BEGIN SELECT 1 END", ["BEGIN", "SELECT", "END"]),
        # sqlglot reads what follows a statement-initial END or PRINT as one string; we do not.
        ("BEGIN TRY SELECT 1; END TRY BEGIN CATCH PRINT 'x'; END CATCH", None),
        ("WHILE 1 = 1 BREAK", ["WHILE", "BREAK"]),
        ("RAISERROR('x', 10, 1) WITH NOWAIT SELECT 1", ["RAISERROR", "SELECT"]),
    ],
)
def test_control_flow_pieces(sql: str, keywords: list[str] | None) -> None:
    statements = split_batch(sql)
    if keywords is None:
        assert [s.words for s in statements] == [
            ("BEGIN", "TRY"),
            ("SELECT",),
            ("END", "TRY"),
            ("BEGIN", "CATCH"),
            ("PRINT",),
            ("END", "CATCH"),
        ]
    else:
        assert [s.keyword for s in statements] == keywords


@pytest.mark.parametrize(
    ("sql", "number"),
    [
        ("DELETE FROM orders; BREAK", 135),
        ("DELETE FROM orders; IF 1 = 1 CONTINUE", 136),
        ("DELETE FROM orders; THROW", 10704),
        ("DELETE FROM orders; RETURN 1", 178),
        ("DELETE FROM orders; BEGIN SELECT 1", 102),
        ("DELETE FROM orders; END", 102),
        ("DELETE FROM orders; BEGIN TRY SELECT 1 END TRY", 102),
        ("DELETE FROM orders; IF", 102),
    ],
)
def test_misplaced_control_flow_stops_the_batch_before_it_runs(
    session: Session, sql: str, number: int
) -> None:
    with pytest.raises(SqlError) as caught:
        session.execute(sql)
    assert caught.value.number == number
    assert run(session, "SELECT COUNT(*) FROM orders") == [[(60,)]]


def test_caught_errors_are_not_sent_and_error_functions_are_null_outside_catch(
    session: Session,
) -> None:
    assert run(
        session,
        "SELECT ERROR_NUMBER(); BEGIN TRY SELECT CAST('x' AS int) END TRY "
        "BEGIN CATCH SELECT ERROR_NUMBER(), XACT_STATE() END CATCH; SELECT ERROR_NUMBER(), @@ERROR",
    ) == [[(None,)], [(245, 0)], [(None, 0)]]


def test_name_resolution_errors_are_not_caught(session: Session) -> None:
    with pytest.raises(SqlError) as caught:
        run(session, "BEGIN TRY SELECT * FROM missing END TRY BEGIN CATCH SELECT 1 END CATCH")
    assert caught.value.number == 208


def test_statement_errors_let_the_batch_go_on_and_dml_is_terminated(session: Session) -> None:
    results = session.execute(
        "INSERT INTO customers (id, name) VALUES (1, N'x'); RAISERROR('r', 11, 1); SELECT 1"
    )
    first = next(results)
    assert isinstance(first, StatementFailed)
    assert (first.error.number, first.error.terminated) == (544, True)
    second = next(results)
    assert isinstance(second, StatementFailed)
    assert (second.error.number, second.error.terminated) == (50000, False)


@pytest.mark.parametrize(
    ("template", "args", "expected"),
    [
        ("%s and %d", ["a", 5], "a and 5"),
        ("%5s|%-5s|%.2s", ["ab", "cd", "xyz"], "   ab|cd   |xy"),
        ("%05d %+d % d %i %u", [42, 7, 7, -3, -1], "00042 +7  7 -3 4294967295"),
        ("%x %X %#x %o %#o", [255, 255, 255, 8, 8], "ff FF 0xff 10 010"),
        ("%*d|%.*d", [4, 1, 3, 2], "   1|002"),
        ("100%% of %s", [None], "100% of (null)"),
        ("%d %s", [], "(null) (null)"),
        ("trailing %", [], "trailing %"),
    ],
)
def test_raiserror_formats_like_printf(template: str, args: list[object], expected: str) -> None:
    assert format_message(template, args) == expected


def test_raiserror_argument_of_the_wrong_type(session: Session) -> None:
    assert run(session, "BEGIN TRY RAISERROR('%d', 16, 1, N'x') END TRY BEGIN CATCH "
               "SELECT ERROR_NUMBER() END CATCH") == [[(2786,)]]  # fmt: skip


def test_an_if_condition_leaves_rowcount_to_the_statement_before(session: Session) -> None:
    assert run(
        session,
        "UPDATE products SET price = price WHERE id < 4; "
        "IF @@ROWCOUNT = 3 SELECT @@ROWCOUNT ELSE SELECT -1",
    ) == [[(3,)]]
