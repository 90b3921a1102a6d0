"""The session statement check (connector/_txcontrol.py) against a real T-SQL engine: whatever it
lets through, tdslite runs without touching the transaction.

Statements mix ordinary reads and writes with what T-SQL reads its own way (strings, [names],
"names", nested comments, ``*/*``, line breaks, GO, no ``;``) and, half the time, a statement that
controls the transaction, bare or hidden behind an opener and a closer where one reader may see
it inside a comment, string or name and the other may not. tdslite splits and runs the batch as
SQL Server does, inside a transaction: a statement the check allowed must leave that transaction
open with @@TRANCOUNT 1, XACT_ABORT off and no BEGIN/COMMIT/ROLLBACK/SAVE started.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connector._txcontrol import transaction_control
from tdslite.engine import Session, SqlError
from tests.support.engine import admin_session

CONTROL_KEYWORDS = {"BEGIN", "COMMIT", "ROLLBACK", "SAVE"}

FIRST = [
    "SELECT 1",
    "SELECT id FROM customers",
    "UPDATE customers SET name = name WHERE id = 1",
    "INSERT INTO #t (n) VALUES (1)",
    "DELETE FROM #t WHERE n = 2",
]
PIECES = [
    "'COMMIT'", "N'ROLLBACK'", "[commit]", "[save]", '"rollback"', "'it''s'", "/* COMMIT */",
    "/* /* ROLLBACK */ */", "-- COMMIT\n", "[a]]COMMIT]", "x", "AS y", "1", "(", ")", ",",
]  # fmt: skip
CONTROL = [
    "COMMIT", "COMMIT WORK", "ROLLBACK", "ROLLBACK TRAN", "SAVE TRANSACTION s", "SAVE TRAN s",
    "BEGIN TRAN", "BEGIN TRANSACTION", "BEGIN DISTRIBUTED TRANSACTION", "SET XACT_ABORT ON",
    "SET IMPLICIT_TRANSACTIONS ON", "EXEC (N'COMMIT')", "EXECUTE sp_executesql N'ROLLBACK'",
]  # fmt: skip
OPENERS = ["/* /* */* */", "/* /* */*", "/*/", "/*", "--", "'", '"', "[", "N'"]
CLOSERS = ["*/", '"*/" -- "', "'*/' -- '", "[*/] -- ]", "-- */", "'", '"', "]", "\n"]
SEPARATORS = [" ", "\n", "\r\n", ";", "\nGO\n", "\t"]

statements = st.builds(
    lambda first, middle, last: first + "".join(sep + piece for sep, piece in middle) + last,
    st.sampled_from(FIRST),
    st.lists(st.tuples(st.sampled_from(SEPARATORS), st.sampled_from(PIECES)), max_size=4),
    st.one_of(
        st.just(""),
        st.builds(str.__add__, st.sampled_from(SEPARATORS), st.sampled_from(CONTROL)),
    ),
) | st.builds(
    lambda first, opener, control, closer: f"{first} {opener} {control} {closer}",
    st.sampled_from(FIRST),
    st.sampled_from(OPENERS),
    st.sampled_from(CONTROL),
    st.sampled_from(CLOSERS),
)

EXAMPLES = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    with admin_session() as session:
        list(session.execute("CREATE TABLE #t (n int)"))
        yield session


def touches_the_transaction(session: Session, sql: str) -> bool:
    """Run ``sql`` inside a transaction; True when it ended, nested or configured it."""
    session.started.clear()
    list(session.execute("BEGIN TRANSACTION"))
    session.started.clear()
    try:
        for result in session.execute(sql):
            for _ in getattr(result, "rows", None) or ():
                pass
    except SqlError:
        pass
    # (tdslite refuses SET IMPLICIT_TRANSACTIONS ON: the check's refusal is tested below)
    touched = (
        session.trancount != 1
        or session.xact_abort
        or bool(CONTROL_KEYWORDS & set(session.started))
    )
    session.xact_abort = False
    while session.in_transaction:
        session.rollback()
    return touched


def test_the_engine_sees_a_statement_that_commits(session: Session) -> None:
    # the harness can fail: unchecked, these end or nest the transaction in tdslite
    assert touches_the_transaction(session, "SELECT 1 COMMIT")
    assert touches_the_transaction(session, "UPDATE customers SET name = name; BEGIN TRAN")
    assert touches_the_transaction(session, 'SELECT 1 /* /* */* */ COMMIT SELECT 2 AS "*/" -- "')
    assert not touches_the_transaction(session, "SELECT 'COMMIT' AS [rollback]")


@EXAMPLES
@given(sql=statements)
@example(sql='SELECT 1 /* /* */* */ COMMIT SELECT 2 AS "*/" -- "')
@example(sql="SELECT 1 /* /* */ COMMIT */")
@example(sql="SELECT 1 --\rCOMMIT")
@example(sql="SELECT [a]]COMMIT] FROM customers")
@example(sql="SELECT 1\nGO\nROLLBACK")
def test_what_the_check_allows_never_touches_the_transaction(session: Session, sql: str) -> None:
    if transaction_control(sql) is None:
        assert not touches_the_transaction(session, sql), sql


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT N'COMMIT' AS [rollback] -- SAVE TRAN x",
        "UPDATE t SET [commit] = 1 /* ROLLBACK */",
        "BEGIN TRY SELECT 1 END TRY BEGIN CATCH SELECT 2 END CATCH",
        "EXEC dbo.refresh_totals @id = 1",
        'SELECT "save" FROM t',
    ],
)
def test_keywords_as_data_pass(sql: str) -> None:
    assert transaction_control(sql) is None


@pytest.mark.parametrize("sql", [*CONTROL, "SELECT 1 /* open", "SELECT 'open", "BEGIN"])
def test_control_and_unreadable_statements_are_refused(sql: str) -> None:
    assert transaction_control(sql) is not None
