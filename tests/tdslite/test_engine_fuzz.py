"""tdslite engine fuzz: any batch text either runs or raises SqlError, never anything else."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tdslite.engine import Engine, ResultSet, Session, SqlError, User

ADMIN = User(login="sa", password="pw", role="admin", database_user="dbo")
READER = User(login="ro", password="pw", role="read-only", database_user="reader")

WORDS = [
    "SELECT", "INSERT", "INTO", "UPDATE", "DELETE", "FROM", "WHERE", "SET", "VALUES", "TOP", "(",
    ")", ",", ";", "*", "=", "<", "+", "/", "%", "1", "0", "2.50", "'x'", "N'ü'", "@p",
    "@@ROWCOUNT",
    "orders", "customers", "id", "amount", "status", "AND", "OR", "NOT", "NULL", "IS", "IN",
    "CAST", "AS", "int", "decimal(5,2)", "nvarchar(max)", "datetime2", "CONVERT", "GROUP", "BY",
    "ORDER", "HAVING", "COUNT", "SUM", "JOIN", "ON", "LEFT", "WITH", "EXEC", "EXECUTE", "USER",
    "DECLARE", "BEGIN", "TRAN", "COMMIT", "ROLLBACK", "REVERT", "CREATE", "TABLE", "DROP", "IF",
    "CASE", "WHEN", "THEN", "ELSE", "END", "OFFSET", "ROWS", "FETCH", "NEXT", "ONLY", "UNION",
    "sp_set_session_context", "SESSION_CONTEXT", "GETDATE()", "LEN", "LEFT", "DATEADD", "day",
    "--", "/*", "*/", "[x]", "'", "\n", "FOR", "JSON", "OUTPUT", "inserted.id", "MERGE",
]  # fmt: skip


@pytest.fixture(scope="module")
def sessions() -> Iterator[tuple[Session, Session]]:
    engine = Engine(":memory:", {"sa": ADMIN, "ro": READER}, seed="sample")
    try:
        yield engine.open_session(READER), engine.open_session(ADMIN)
    finally:
        engine.close()


def consume(session: Session, sql: str) -> None:
    """Run ``sql``; any error must be a SqlError with a number and no internal failure."""
    error: SqlError | None = None
    try:
        for result in session.execute(sql):
            if isinstance(result, ResultSet):
                for _ in result.rows:
                    pass
    except SqlError as exc:
        error = exc
    finally:
        session.reset()
    if error is not None:
        assert error.number > 0
        assert "internal" not in error.message, (sql, error.__cause__)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=14))
def test_token_soup_runs_or_raises_sql_error(
    sessions: tuple[Session, Session], words: list[str]
) -> None:
    reader, _ = sessions
    consume(reader, " ".join(words))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=60))
def test_arbitrary_text_runs_or_raises_sql_error(
    sessions: tuple[Session, Session], text: str
) -> None:
    reader, _ = sessions
    consume(reader, text)
    consume(reader, "SELECT " + text)


def test_reader_could_not_change_anything(sessions: tuple[Session, Session]) -> None:
    _, admin = sessions
    counts = [
        list(r.rows)
        for r in admin.execute("SELECT COUNT(*) FROM orders; SELECT COUNT(*) FROM customers")
    ]  # type: ignore[union-attr]
    assert counts == [[(60,)], [(24,)]]
