"""The read-only check against a real T-SQL engine: whatever the check allows, tdslite runs as
exactly one SELECT and nothing else.

Statements come from a grammar that mixes SELECTs with what T-SQL reads differently from a
generic SQL tokenizer: lone ``#``/``##``/``@``/``@@`` (names to SQL Server), ``$`` and other
currency signs (money literals), ``0x`` literals, [brackets] with ``]]``, "quoted" names, N''
strings with '' escapes, nested comments, every line-break character, Unicode spaces, GO, and
statements with or without ``;`` (T-SQL needs none). tdslite splits a batch as SQL Server does
and `Session.started` records each statement it actually started, so a check that lets a second
statement through fails here with the statement it let through.

The engine runs as an admin login inside a transaction rolled back after each example, so a
DELETE that slipped through would run (and be seen), not be stopped by permissions.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connector._readonly import _check
from tdslite.engine import Session, SqlError
from tdslite.engine._batch import split_batch
from tests.support.engine import admin_session

#: What a plain read may start as, for tdslite.
READ_KEYWORDS = frozenset({"SELECT", "WITH"})

#: The exact strings attack testing found passing the check (tdslite ran the DELETE).
ATTACKS = [
    "SELECT 1 # DELETE FROM customers WHERE id = 1",
    "SELECT 1 # REVERT",
    "SELECT 1 # SHUTDOWN",
    "SELECT 1 #\nDELETE FROM orders WHERE id = 1",
]
#: Found later: sqlglot reads the "/" of "*/*" again as a comment opener, one nesting level more
#: than SQL Server, so to it the DELETE is inside a comment and '" -- "' is an alias.
COMMENT_ATTACK = 'SELECT 1 /* /* */* */ DELETE FROM orders SELECT 2 AS "*/" -- "'

SELECTS = [
    "SELECT 1",
    "SELECT id FROM customers",
    "SELECT name, email FROM customers WHERE id = 1",
    "SELECT TOP 2 * FROM orders ORDER BY id",
    "SELECT COUNT(*) AS n FROM products",
    "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id",
]
# What follows a SELECT: pieces T-SQL reads in its own way, glued or spaced.
SIGILS = ["#", "##", "@", "@@", "$", "\u20ac", "\u00a3", "\\"]
TROUBLE = [
    "#x", "@x", "@@ROWCOUNT", "$1", "0x1",
    "0x", "[x]", "[a]]b]", "[#]", '"q"', '"a""b"', "N'x'", "'it''s'", "''", "x", "AS", "AS x",
    "1", "1.", ".5", "1e5", "/* c */", "/* /* n */ */", "/* /* n */", "*/", "-- c\n", "-- c",
    "{fn NOW()}", "(", ")", ",", ".", "=", "'",
    "/* /* */* */", "*/*", "/*/", "*/", "{#", "#}", "{# c #}", "-|-", "#>", "#>>", "{%-", "==",
    "1e", ".1e.", "0x1_1", ".0x1", "\u0661", 'N"x"', "\uff24\uff25\uff2c\uff25\uff34\uff25",
]  # fmt: skip
# Traps: an opener before the second statement and a closer after it, where one reader may
# see the second statement inside a comment, string or name and the other may not.
OPENERS = [
    "/* /* */* */", "/* /* */*", "/*/", "{#", "/*", "--", "'", '"', "[", "#", "N'", "-|--'",
]  # fmt: skip
CLOSERS = [
    "*/", "#}", '"*/" -- "', "'*/' -- '", "[*/] -- ]", '"*/"', "-- */", "'", '"', "]", "\n",
]  # fmt: skip
SPACES = [
    "", " ", "\t", "\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029",
    "\xa0", "\u200b", "\u3000", "\ufeff", ";", "\nGO\n", " GO ",
]  # fmt: skip
SECOND = [
    "DELETE FROM orders WHERE id = 1",
    "DELETE orders",
    "UPDATE customers SET name = 'x'",
    "INSERT INTO products (name, category, price) VALUES ('p', 'c', 1)",
    "DROP TABLE orders",
    "REVERT",
    "SHUTDOWN",
    "SELECT 2",
    "CLOSE c",
    "OPEN c",
    "FETCH c",
    "FETCH NEXT FROM c",
    "DEALLOCATE c",
    "CHECKPOINT",
    "SETUSER",
    "RECONFIGURE",
    "SET NOCOUNT ON",
    "BEGIN TRAN",
    "COMMIT",
    "EXEC sp_who",
    "KILL 52",
    "WAITFOR DELAY '00:00:00'",
    "TRUNCATE TABLE orders",
]

# Mostly one space between pieces, else any of SPACES (nothing, exotic breaks, ";", GO); a
# SELECT, some trouble, and (half the time) a second statement that must never run; or a trap.
separators = st.one_of(st.just(" "), st.sampled_from(SPACES))
trouble = st.one_of(st.sampled_from(SIGILS), st.sampled_from(TROUBLE))
statements = st.builds(
    lambda first, middle, last: first + "".join(sep + piece for sep, piece in middle) + last,
    st.sampled_from(SELECTS),
    st.lists(st.tuples(separators, trouble), max_size=4),
    st.one_of(st.just(""), st.builds(str.__add__, separators, st.sampled_from(SECOND))),
) | st.builds(
    lambda first, opener, second, closer: f"{first} {opener} {second} {closer}",
    st.sampled_from(SELECTS),
    st.sampled_from(OPENERS),
    st.sampled_from(SECOND),
    st.sampled_from(CLOSERS),
)


# Deterministic and bounded: the same 300 examples every run, well under 60 s on a loaded machine.
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
        yield session


def ran(session: Session, sql: str) -> list[str]:
    """The keywords of the statements tdslite started for batch ``sql`` (rolled back after)."""
    session.started.clear()
    session.begin()
    try:
        for result in session.execute(sql):
            rows = getattr(result, "rows", None)
            if rows is not None:
                for _ in rows:
                    pass
    except SqlError:
        pass
    finally:
        if session.in_transaction:
            session.rollback()
    return list(session.started)


def assert_only_one_select(session: Session, sql: str) -> None:
    """``sql`` passed the check: tdslite must split it into one SELECT and run nothing else."""
    try:
        split = [s.keyword for s in split_batch(sql)]
    except SqlError:
        split = []  # tdslite cannot even split it: nothing can run
    assert len(split) <= 1, (sql, split)
    assert set(split) <= READ_KEYWORDS, (sql, split)
    started = ran(session, sql)
    assert set(started) <= READ_KEYWORDS, (sql, started)


def test_the_engine_sees_what_an_attack_would_run(session: Session) -> None:
    # The harness can fail: unchecked, the attack strings make tdslite start their DELETE etc.
    assert ran(session, ATTACKS[0]) == ["SELECT", "DELETE"]
    assert ran(session, ATTACKS[3]) == ["SELECT", "DELETE"]
    assert ran(session, "SELECT id FROM customers") == ["SELECT"]
    assert ran(session, COMMENT_ATTACK) == ["SELECT", "DELETE", "SELECT"]


@pytest.mark.parametrize("sql", ATTACKS)
def test_reported_attacks_are_refused(session: Session, sql: str) -> None:
    verdict = _check(sql)
    assert not verdict.allowed
    assert "#" in verdict.reason  # names the sigil, echoes no values
    assert "customers" not in verdict.reason
    assert "orders" not in verdict.reason


@EXAMPLES
@given(sql=statements)
@example(sql=ATTACKS[0])
@example(sql=ATTACKS[1])
@example(sql=ATTACKS[2])
@example(sql=ATTACKS[3])
@example(sql="SELECT 1 #DELETE FROM customers")  # glued: one name (#DELETE) to SQL Server too
@example(sql="SELECT $DELETE FROM orders")
@example(sql="SELECT 0x1SHUTDOWN")
@example(sql="SELECT 1 \u20acDELETE FROM orders")
@example(sql="SELECT 1 /* /* */ DELETE FROM orders */")
@example(sql="SELECT 1 /* /* */ DELETE FROM orders")
@example(sql="SELECT 1 --\rDELETE FROM orders")
@example(sql="SELECT 1 --\u2028DELETE FROM orders")
@example(sql="SELECT 1 x\xa0DELETE FROM orders")
@example(sql="SELECT 1 AS x\nGO\nDELETE FROM orders")
@example(sql="SELECT 1 SELECT 2")
@example(sql="SELECT 1 CLOSE c")
@example(sql="SELECT 1 FETCH c")  # a cursor FETCH to SQL Server, a limit to sqlglot
# found by the grammar against earlier versions of the check
@example(sql="SELECT 1.FETCH c")
@example(sql="SELECT 1 @ @ COMMIT")
@example(sql="SELECT 1\t/* c */# \u20ac#REVERT")
@example(sql="SELECT 1 /* -- /* \n */ DELETE FROM orders -- */")
@example(sql=COMMENT_ATTACK)
@example(sql="SELECT 1 {# c #} DELETE FROM orders")
def test_what_the_check_allows_runs_as_one_select(session: Session, sql: str) -> None:
    verdict = _check(sql)
    if verdict.allowed:
        assert_only_one_select(session, sql)
    else:
        assert verdict.reason


# Raw text after a SELECT, drawn from the characters T-SQL lexes in its own way.
ALPHABET = "#@$\u20ac\\[]\"' \t\n\r\x0b\x85\u2028\xa0\u200b;-/*(),.0x1eNGOAS{}"


@EXAMPLES
@given(
    first=st.sampled_from(["SELECT 1", "SELECT id FROM customers"]),
    tail=st.text(alphabet=ALPHABET, max_size=12),
    second=st.sampled_from(SECOND),
)
@example(first="SELECT 1", tail=" # ", second="DELETE FROM orders WHERE id = 1")
@example(first="SELECT 1", tail=" @\n", second="SHUTDOWN")
@example(first="SELECT id FROM customers", tail=",", second="SELECT 2")
def test_character_soup_then_a_statement(
    session: Session, first: str, tail: str, second: str
) -> None:
    sql = first + tail + second
    if _check(sql).allowed:
        assert_only_one_select(session, sql)
