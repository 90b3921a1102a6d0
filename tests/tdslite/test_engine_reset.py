"""tdslite engine: a reset (RESETCONNECTION, sp_reset_connection) leaves a session as a fresh
login's, whatever it held: #tables, #procedures, session context keys (read-only ones too), SET
options, an open transaction and the tables it created, the error state of control flow.

`Session.reset` skips the work that has nothing to do (no #table and no transaction: the catalog
as read is kept; control-flow state that is as new is kept): each case below leaves work to do
and checks it was done, by comparing everything a client can observe with a fresh session of an
identical engine; the nothing-to-do cases check the same, and that another session's schema
change is still seen after a reset that kept the catalog."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tdslite.engine import Engine, ResultSet, Session, SqlError, User
from tdslite.engine._catalog import CATALOG_TABLE

ADMIN = User(login="sa", password="pw", role="admin", database_user="dbo")
SETUP = "CREATE TABLE kept (a int); INSERT INTO kept VALUES (1)"


@pytest.fixture
def pair() -> Iterator[Callable[[], tuple[Session, Session]]]:
    """Two sessions of two identical engines: (the one to reset, a fresh one)."""
    engines: list[Engine] = []

    def open_pair() -> tuple[Session, Session]:
        sessions = []
        for _ in range(2):
            engine = Engine(":memory:", {"sa": ADMIN})
            engines.append(engine)
            session = engine.open_session(ADMIN)
            assert run(session, SETUP)[1] is None
            sessions.append(session)
        return sessions[0], sessions[1]

    yield open_pair
    for engine in engines:
        engine.close()


def run(session: Session, sql: str) -> tuple[list[Any], int | None]:
    """The rows of each result set of ``sql`` and the number of the error that ended it."""
    seen: list[Any] = []
    try:
        for result in session.execute(sql):
            if isinstance(result, ResultSet):
                seen.append(list(result.rows))
    except SqlError as exc:
        return seen, exc.number
    return seen, None


#: what a client can see of a session, one batch per item (each on its own: one may fail)
OBSERVE = (
    "SELECT @@TRANCOUNT, @@ERROR",
    "SELECT @@DATEFIRST, @@OPTIONS, @@LANGUAGE, @@LOCK_TIMEOUT, @@TEXTSIZE",
    "SELECT SESSION_CONTEXT(N'k'), SESSION_CONTEXT(N'edgetds.sub')",
    "SELECT a FROM #t",
    "EXEC #p",
    "SELECT a FROM made_in_tran",
    "SELECT a FROM kept",
    "INSERT INTO kept VALUES (2); SELECT @@ROWCOUNT",  # NOCOUNT / XACT_ABORT do not show here
    "SELECT 1/0",  # an error: XACT_ABORT would doom a transaction, not here
    "SELECT @@ERROR",
    "EXEC sp_set_session_context @key = N'k', @value = N'again', @read_only = 1",
    "BEGIN TRANSACTION; CREATE TABLE made_in_tran (a int); COMMIT",
    "SELECT a FROM made_in_tran",
)


def observe(session: Session) -> list[tuple[list[Any], int | None]]:
    return [run(session, sql) for sql in OBSERVE]


@pytest.mark.parametrize(
    "state",
    [
        pytest.param("", id="nothing"),
        pytest.param("SELECT a FROM kept", id="nothing-but-a-read"),
        pytest.param("CREATE TABLE #t (a int); INSERT INTO #t VALUES (1)", id="temp-table"),
        pytest.param("CREATE PROCEDURE #p AS SELECT 1 AS one", id="temp-procedure"),
        pytest.param(
            "EXEC sp_set_session_context @key = N'k', @value = N'v', @read_only = 1;"
            "EXEC sp_set_session_context @key = N'edgetds.sub', @value = N's', @read_only = 0",
            id="context-keys",
        ),
        pytest.param(
            "SET DATEFIRST 1; SET LANGUAGE British; SET LOCK_TIMEOUT 5; SET TEXTSIZE 10;"
            "SET ANSI_NULLS OFF; SET NOCOUNT ON; SET XACT_ABORT ON",
            id="set-options",
        ),
        pytest.param(
            "BEGIN TRANSACTION; CREATE TABLE made_in_tran (a int); INSERT INTO kept VALUES (9)",
            id="open-transaction-with-ddl",
        ),
        pytest.param("BEGIN TRANSACTION; BEGIN TRANSACTION", id="nested-transaction"),
        pytest.param(
            "BEGIN TRANSACTION; CREATE TABLE #t (a int); SELECT a FROM #t", id="temp-in-tran"
        ),
        pytest.param("SELECT 1/0", id="error-number"),
        pytest.param(
            "BEGIN TRY SELECT 1/0 END TRY BEGIN CATCH SELECT ERROR_NUMBER() END CATCH",
            id="caught-error",
        ),
        pytest.param(
            "SET XACT_ABORT ON; BEGIN TRANSACTION; SELECT 1/0", id="transaction-doomed-by-error"
        ),
    ],
)
def test_a_reset_session_answers_as_a_fresh_one(
    pair: Callable[[], tuple[Session, Session]], state: str
) -> None:
    used, fresh = pair()
    if state:
        run(used, state)
    used.reset()
    used.take_transaction_events()
    assert observe(used) == observe(fresh)


def test_the_state_the_cases_leave_is_visible_before_the_reset(
    pair: Callable[[], tuple[Session, Session]],
) -> None:
    """(The cases above would pass without a reset if their state did not show.)"""
    used, fresh = pair()
    baseline = observe(fresh)
    for state in (
        "CREATE TABLE #t (a int); INSERT INTO #t VALUES (1)",
        "CREATE PROCEDURE #p AS SELECT 1 AS one",
        "EXEC sp_set_session_context @key = N'k', @value = N'v', @read_only = 1",
        "SET DATEFIRST 1",
        "BEGIN TRANSACTION; CREATE TABLE made_in_tran (a int)",
    ):
        assert run(used, state)[1] is None
    assert run(used, "SELECT 1/0")[1] == 8134
    seen = [run(used, sql) for sql in OBSERVE[:6]]  # (each differs from a fresh session)
    assert all(got != want for got, want in zip(seen, baseline[:6], strict=True))


def test_a_reset_that_keeps_the_catalog_still_sees_other_sessions_ddl(
    pair: Callable[[], tuple[Session, Session]],
) -> None:
    used, _ = pair()
    other = used._engine.open_session(ADMIN)
    assert run(used, "SELECT a FROM kept") == ([[(1,)]], None)  # the catalog is read
    assert run(other, "DROP TABLE kept; CREATE TABLE kept (b nvarchar(5))")[1] is None
    assert run(other, "INSERT INTO kept VALUES (N'new')")[1] is None
    used.reset()  # nothing to drop, no transaction: the catalog is not re-read here
    assert run(used, "SELECT b FROM kept") == ([[("new",)]], None)
    assert run(used, "SELECT a FROM kept")[1] == 207
    other.close()


def catalog_reads(session: Session, sql: str) -> int:
    """How often running ``sql`` on ``session`` reads the table catalog (all of it) from SQLite."""
    statements: list[str] = []
    session._conn.set_trace_callback(statements.append)
    try:
        run(session, sql)
    finally:
        session._conn.set_trace_callback(None)
    return sum(1 for s in statements if CATALOG_TABLE in s and "SELECT tbl," in s)


@pytest.mark.parametrize(
    ("state", "reads"),
    [
        pytest.param("SELECT a FROM kept", 0, id="nothing-to-reset"),
        pytest.param("CREATE TABLE #t (a int)", 1, id="a-temp-table"),
        pytest.param("BEGIN TRANSACTION", 1, id="a-transaction"),
    ],
)
def test_a_reset_rereads_the_catalog_only_when_it_dropped_or_rolled_back(
    pair: Callable[[], tuple[Session, Session]], state: str, reads: int
) -> None:
    """A pooling client resets before every query: a reset with nothing to drop must not make the
    next statement re-read every table's columns (on a database of many tables that cost more
    than the query)."""
    used, _ = pair()
    run(used, state)
    run(used, "SELECT a FROM kept")
    assert catalog_reads(used, "SELECT a FROM kept") == 0  # read already
    used.reset()
    assert catalog_reads(used, "SELECT a FROM kept") == reads
