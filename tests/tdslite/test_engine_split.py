"""tdslite cuts a batch into statements where SQL Server does, also where sqlglot's tokenizer
reads the text otherwise: lone and glued sigils, binary and money literals running into a word.
`Session.started` shows which statements a batch actually started."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tdslite.engine import Session, SqlError
from tdslite.engine._batch import split_batch
from tests.support.engine import admin_session


@pytest.mark.parametrize(
    ("sql", "keywords"),
    [
        # A lone # or @ is a name of its own; what follows is the next statement.
        ("SELECT 1 # DELETE FROM orders", ["SELECT", "DELETE"]),
        ("SELECT 1 #\nREVERT", ["SELECT", "REVERT"]),
        ("SELECT 1 @@ SHUTDOWN", ["SELECT", "SHUTDOWN"]),
        # Glued to #, ## or @ a word is one name: #DELETE is a column alias.
        ("SELECT 1 #DELETE FROM orders", ["SELECT"]),
        ("SELECT * FROM ##shutdown", ["SELECT"]),
        ("SELECT @delete", ["SELECT"]),
        # 0x and hex digits are a binary literal, a currency sign and digits a money literal.
        ("SELECT 0x1SHUTDOWN", ["SELECT", "SHUTDOWN"]),
        ("SELECT 0x1F", ["SELECT"]),
        ("SELECT $DELETE FROM orders", ["SELECT", "DELETE"]),
        ("SELECT a\u20acDELETE FROM orders", ["SELECT", "DELETE"]),
        ("SELECT \u00a35REVERT", ["SELECT", "REVERT"]),
        ("SELECT a$b FROM t", ["SELECT"]),  # $ inside a name is part of it
        ("SELECT [0x1SHUTDOWN], '$DELETE'", ["SELECT"]),
        # Reserved keywords that begin statements tdslite does not run still cut the batch.
        ("SELECT 1 CLOSE c", ["SELECT", "CLOSE"]),
        ("SELECT 1 FETCH c", ["SELECT", "FETCH"]),
        ("SELECT 1 OPEN c DEALLOCATE c", ["SELECT", "OPEN", "DEALLOCATE"]),
        ("SELECT id FROM t ORDER BY id OFFSET 1 ROWS FETCH NEXT 1 ROWS ONLY", ["SELECT"]),
    ],
)
def test_statements_are_cut_as_sql_server_cuts_them(sql: str, keywords: list[str]) -> None:
    assert [s.keyword for s in split_batch(sql)] == keywords


def test_a_statement_cut_from_a_word_keeps_its_line() -> None:
    statements = split_batch("SELECT 1\n\n$DELETE FROM orders")
    assert [(s.keyword, s.line) for s in statements] == [("SELECT", 1), ("DELETE", 3)]


def test_a_character_no_name_may_hold_is_a_syntax_error() -> None:
    with pytest.raises(SqlError) as caught:
        split_batch("SELECT a\u00a7b FROM t")  # section sign: neither name nor currency
    assert caught.value.number == 102


@pytest.fixture
def session() -> Iterator[Session]:
    with admin_session() as session:
        yield session


def test_started_lists_what_the_batch_ran(session: Session) -> None:
    session.begin()
    for result in session.execute("SELECT 1 # DELETE FROM orders WHERE id = 1"):
        for _ in getattr(result, "rows", ()):
            pass
    assert list(session.started) == ["SELECT", "DELETE"]
    session.rollback()
    session.started.clear()
    with pytest.raises(SqlError):
        list(session.execute("SELECT 1 x SELEKT 2"))  # a syntax error: nothing starts
    assert list(session.started) == []
