"""The read-only check against both oracles, on realistic T-SQL: a structure-aware generator of
SELECTs (subqueries in every position, CTEs, UNION/EXCEPT/INTERSECT, JOIN/APPLY, table and query
hints, FOR JSON/XML, OFFSET/FETCH, TOP, CASE, CAST/CONVERT, calls, every literal form, bracketed,
quoted, @ and # names) laid out with comments, line breaks and Unicode spaces between tokens, then
mutated (a token dropped, doubled or swapped, two tokens glued, a statement keyword or a whole
statement inserted at a token boundary).

Whatever the check allows must (1) run as exactly one SELECT in tdslite, which splits a batch as
SQL Server does (`Session.started`), and (2) lex to the same words and strings for the lexer
written from SQL Server's documentation (tests/policy/test_readonly_lexer.py).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connector._readonly import _check
from tdslite.engine import Session
from tests.support.engine import admin_session

from .test_readonly_differential import assert_only_one_select
from .test_readonly_lexer import check_words_and_strings, sql_server_lex

TABLES = ["customers", "orders", "products", "dbo.orders", "[orders]", '"customers"', "#t", "##g"]
COLUMNS = ["id", "name", "email", "total", "customer_id", "price", "[name]", '"total"', "x"]
ALIASES = ["a", "b", "c", "[o]", '"q"', "t1"]
FUNCS = ["ABS", "LEN", "UPPER", "ISNULL", "COALESCE", "SUM", "COUNT", "MAX", "ROUND", "IIF"]
LITERALS = [
    "1", "0", "42", "1.5", ".5", "1.", "1e5", "1.e3", "2E+5", "1e-3", "0x1F", "0x0",
    "'a'", "''", "'it''s'", "N'x'", "N'caf\u00e9'", "n'y'",
    "NULL", "@p1", "@x", "@@ROWCOUNT", "@@VERSION", "-1", "+2", "'--'", "'/*'", "N'*/'",
]  # fmt: skip
# Money literals (refused: a currency sign is read differently) and other rare forms.
ODD_LITERALS = ["$1", "$1.50", "\u00a32", "\u20ac3", "0x", "1.E5", "{fn NOW()}", "\u0661"]
TYPES = ["INT", "BIGINT", "DECIMAL(18, 4)", "NVARCHAR(50)", "VARCHAR(MAX)", "DATE", "BIT"]
TABLE_HINTS = ["NOLOCK", "READUNCOMMITTED", "READPAST", "ROWLOCK", "FORCESEEK", "INDEX(ix)"]
QUERY_HINTS = ["RECOMPILE", "MAXDOP 1", "FAST 10", "OPTIMIZE FOR UNKNOWN"]
COMPARISONS = ["=", "<>", "!=", "<", ">", "<=", ">="]
ARITHMETIC = ["+", "-", "*", "/", "%", "&", "|", "^"]

# Between two tokens: mostly one space, else line breaks, comments (nested too) and the
# characters whose reading as white space is in doubt.
GAPS = [
    " ", "\n", "\r\n", "\t", "  ", " /* c */ ", "/**/", " /* /* n */ */ ", " -- c\n", "--\n", "",
]  # fmt: skip
ODD_GAPS = ["\r", "\xa0", "\u2028", "\u3000", "\u200b", "\x0b", "\x85", "\ufeff"]
# Inserted at a token boundary by a mutation.
STATEMENT_WORDS = [
    "DELETE", "EXEC", "SHUTDOWN", "REVERT", "WAITFOR", "SELECT", "CLOSE", "OPEN", "FETCH",
    "DEALLOCATE", "CHECKPOINT", "SETUSER", "RECONFIGURE", "KILL", "GO", ";", "#", "@", "##",
    "@@", "$", "\\", "{", "}", "--", "/*", "*/", "'", '"', "[", "]", "N", "0x", ".", "e",
    "DELETE FROM orders", "UPDATE orders SET total = 0", "EXEC sp_who", "SELECT 2",
    "WAITFOR DELAY '00:00:00'", "DROP TABLE orders", "CLOSE c", "FETCH c", "OPEN c",
    "INSERT orders DEFAULT VALUES", "TRUNCATE TABLE orders", "BEGIN TRAN", "COMMIT",
    # clause words: a query cut or joined where one reader may end it and the other not
    "UNION", "EXCEPT", "INTERSECT", "ORDER BY", "OFFSET", "ROWS", "TOP", "WITH", "AS", ",",
    "(", ")", "x", "sp_who", "::", "ON", "FOR", "OPTION", "OVER", "COLLATE",
]  # fmt: skip

Tokens = list[str]
_T = TypeVar("_T")


class Pick:
    """The generator's choices: from hypothesis (shrinkable) or from a seeded `random.Random`
    (fast, for long runs: ``python -m tests.policy.test_readonly_structured``)."""

    def __init__(self, draw: st.DrawFn | None = None, rng: random.Random | None = None) -> None:
        self._draw = draw
        self._rng = rng

    def choice(self, items: Sequence[_T]) -> _T:
        if self._draw is not None:
            return self._draw(st.sampled_from(items))
        assert self._rng is not None
        return self._rng.choice(items)

    def integer(self, low: int, high: int) -> int:
        if self._draw is not None:
            return self._draw(st.integers(low, high))
        assert self._rng is not None
        return self._rng.randint(low, high)

    def boolean(self) -> bool:
        return self.integer(0, 1) == 1


def _column(draw: Pick) -> Tokens:
    col = draw.choice(COLUMNS)
    if draw.boolean():
        return [draw.choice(ALIASES), ".", col]
    return [col]


def _expr(draw: Pick, depth: int) -> Tokens:
    kinds = ["literal", "column", "column", "literal"]
    if depth > 0:
        kinds += ["call", "arith", "case", "cast", "convert", "subquery", "paren", "count"]
        kinds += ["window", "collate", "method"]
    kind = draw.choice(kinds)
    if kind == "literal":
        return [draw.choice(LITERALS if draw.integer(0, 63) else ODD_LITERALS)]
    if kind == "column":
        return _column(draw)
    if kind == "count":
        return ["COUNT", "(", "*", ")"]
    if kind == "window":
        out = [draw.choice(["ROW_NUMBER", "RANK"]), "(", ")", "OVER", "("]
        if draw.boolean():
            out += ["PARTITION", "BY", *_column(draw)]
        out += ["ORDER", "BY", *_column(draw)]
        if draw.boolean():
            out += ["ROWS", "BETWEEN", "UNBOUNDED", "PRECEDING", "AND", "CURRENT", "ROW"]
        return out + [")"]
    if kind == "collate":
        return _column(draw) + ["COLLATE", "Latin1_General_CI_AS"]
    if kind == "method":
        return draw.choice(
            [
                ["geometry", "::", "Point", "(", "1", ",", "2", ",", "0", ")"],
                [*_column(draw), ".", "ToString", "(", ")"],
            ]
        )
    if kind == "call":
        args = draw.integer(1, 3)
        out = [draw.choice(FUNCS), "("]
        for n in range(args):
            out += ([","] if n else []) + _expr(draw, depth - 1)
        return out + [")"]
    if kind == "arith":
        return _expr(draw, depth - 1) + [draw.choice(ARITHMETIC)] + _expr(draw, depth - 1)
    if kind == "case":
        out = ["CASE"]
        for _ in range(draw.integer(1, 2)):
            out += ["WHEN", *_cond(draw, depth - 1), "THEN", *_expr(draw, depth - 1)]
        if draw.boolean():
            out += ["ELSE", *_expr(draw, depth - 1)]
        return out + ["END"]
    if kind == "cast":
        fn = draw.choice(["CAST", "TRY_CAST"])
        return [fn, "(", *_expr(draw, depth - 1), "AS", *draw.choice(TYPES).split(), ")"]
    if kind == "convert":
        fn = draw.choice(["CONVERT", "TRY_CONVERT"])
        return [fn, "(", *draw.choice(TYPES).split(), ",", *_expr(draw, depth - 1), ")"]
    if kind == "subquery":
        return ["(", *_query(draw, depth - 1), ")"]
    return ["(", *_expr(draw, depth - 1), ")"]


def _cond(draw: Pick, depth: int) -> Tokens:
    kinds = ["cmp", "cmp", "null", "like", "in"]
    if depth > 0:
        kinds += ["and", "or", "not", "exists", "in_query", "all", "between"]
    kind = draw.choice(kinds)
    if kind == "cmp":
        return _expr(draw, depth) + [draw.choice(COMPARISONS)] + _expr(draw, depth)
    if kind == "null":
        return _column(draw) + draw.choice([["IS", "NULL"], ["IS", "NOT", "NULL"]])
    if kind == "like":
        return _column(draw) + ["LIKE", draw.choice(["'a%'", "N'%_'", "'[a-c]%'"])]
    if kind == "in":
        return _column(draw) + ["IN", "(", "1", ",", "2", ")"]
    if kind in ("and", "or"):
        return _cond(draw, depth - 1) + [kind.upper()] + _cond(draw, depth - 1)
    if kind == "not":
        return ["NOT", "(", *_cond(draw, depth - 1), ")"]
    if kind == "exists":
        return ["EXISTS", "(", *_query(draw, depth - 1), ")"]
    if kind == "in_query":
        return _column(draw) + ["IN", "(", *_query(draw, depth - 1), ")"]
    if kind == "all":
        quantifier = draw.choice(["ALL", "ANY", "SOME"])
        return _expr(draw, 0) + [">", quantifier, "(", *_query(draw, depth - 1), ")"]
    return _column(draw) + ["BETWEEN", *_expr(draw, 0), "AND", *_expr(draw, 0)]


def _table(draw: Pick, depth: int) -> Tokens:
    if depth > 0 and draw.integer(0, 3) == 0:
        out = ["(", *_query(draw, depth - 1), ")", draw.choice(ALIASES)]
    elif depth > 0 and draw.integer(0, 6) == 0:
        out = draw.choice(
            [["OPENJSON", "(", "@j", ")"], ["STRING_SPLIT", "(", "'a,b'", ",", "','", ")"]]
        )
    elif draw.integer(0, 6) == 0:
        out = ["(", "VALUES", "(", "1", ")", ",", "(", "2", ")", ")", "v", "(", "x", ")"]
    elif draw.integer(0, 6) == 0:
        out = [
            draw.choice(["db.dbo.orders", "db..orders", "[db].[dbo].[orders]"]),
            "TABLESAMPLE",
            "(",
            "10",
            "PERCENT",
            ")",
        ]
    else:
        out = [draw.choice(TABLES)]
        if draw.boolean():
            out += draw.choice([["AS"], []]) + [draw.choice(ALIASES)]
        if draw.integer(0, 3) == 0:
            out += ["WITH", "(", draw.choice(TABLE_HINTS), ")"]
    return out


def _from(draw: Pick, depth: int) -> Tokens:
    out = ["FROM", *_table(draw, depth)]
    for _ in range(draw.integer(0, 2)):
        join = draw.choice(["JOIN", "LEFT JOIN", "INNER JOIN", "CROSS JOIN", ",", "CA"])
        if join == "CA":
            apply = draw.choice(["CROSS", "OUTER"])
            out += [apply, "APPLY", "(", *_query(draw, max(depth - 1, 0)), ")", "ap"]
        elif join in (",", "CROSS JOIN"):
            out += join.split() + _table(draw, depth)
        else:
            out += join.split() + _table(draw, depth) + ["ON", *_cond(draw, 0)]
    return out


def _select(draw: Pick, depth: int) -> Tokens:
    out = ["SELECT"]
    if draw.integer(0, 4) == 0:
        out.append("DISTINCT")
    top = draw.integer(0, 5)
    if top == 0:
        out += ["TOP", draw.choice(["1", "10", "(1)", "(@p1)"])]
    elif top == 1:
        out += ["TOP", "(", "10", ")", "PERCENT"]
    for n in range(draw.integer(1, 3)):
        if n:
            out.append(",")
        item = draw.integer(0, 5)
        if item == 0:
            out.append("*")
        else:
            out += _expr(draw, depth)
            if item == 1:
                out += ["AS", draw.choice(ALIASES)]
    if draw.integer(0, 4):
        out += _from(draw, depth)
    if draw.boolean():
        out += ["WHERE", *_cond(draw, depth)]
    if draw.integer(0, 4) == 0:
        out += ["GROUP", "BY", *_column(draw)]
        if draw.boolean():
            out += ["HAVING", "COUNT", "(", "*", ")", ">", "1"]
    return out


def _query(draw: Pick, depth: int) -> Tokens:
    out = _select(draw, depth)
    for _ in range(draw.integer(0, 1 if depth else 0)):
        op = draw.choice([["UNION"], ["UNION", "ALL"], ["EXCEPT"], ["INTERSECT"]])
        out += op + _select(draw, depth - 1)
    if draw.integer(0, 3) == 0:
        out += ["ORDER", "BY", *_column(draw), draw.choice(["ASC", "DESC"])]
        if draw.boolean():
            out += ["OFFSET", draw.choice(["0", "@p2", "10"]), "ROWS"]
            if draw.boolean():
                out += ["FETCH", draw.choice(["NEXT", "FIRST"]), "5", "ROWS", "ONLY"]
    return out


def statement(draw: Pick) -> Tokens:
    depth = draw.integer(0, 3)
    out: Tokens = []
    if draw.integer(0, 3) == 0:
        out += ["WITH", "w", "AS", "(", *_query(draw, max(depth - 1, 0)), ")"]
        if draw.boolean():
            out += [",", "w2", "(", "c", ")", "AS", "(", *_query(draw, 0), ")"]
    out += _query(draw, depth)
    tail = draw.integer(0, 6)
    if tail == 0:
        out += ["FOR", "JSON", draw.choice(["PATH", "AUTO"])]
    elif tail == 1:
        out += ["FOR", "XML", draw.choice(["PATH", "RAW", "AUTO"])]
    if draw.integer(0, 5) == 0:
        out += ["OPTION", "(", draw.choice(QUERY_HINTS), ")"]
    if draw.integer(0, 5) == 0:
        out.append(";")
    return out


def mutate(draw: Pick, tokens: Tokens) -> Tokens:
    """Up to three mutations: drop, double, swap, glue, or insert a statement word."""
    out = list(tokens)
    for _ in range(draw.integer(0, 3)):
        kind = draw.choice(["drop", "dup", "swap", "glue", "insert", "insert"])
        i = draw.integer(0, len(out) - 1)
        if kind == "drop" and len(out) > 1:
            del out[i]
        elif kind == "dup":
            out.insert(i, out[i])
        elif kind == "swap" and i + 1 < len(out):
            out[i], out[i + 1] = out[i + 1], out[i]
        elif kind == "glue" and i + 1 < len(out):
            out[i : i + 2] = [out[i] + out[i + 1]]
        elif kind == "insert":
            out.insert(draw.integer(0, len(out)), draw.choice(STATEMENT_WORDS))
    return out


def lay_out(draw: Pick, tokens: Tokens) -> str:
    """The tokens joined: mostly one space, at times another gap (comments, breaks, nothing);
    one example in eight may use the gaps whose reading as white space is in doubt."""
    gaps = GAPS + ODD_GAPS if draw.integer(0, 7) == 0 else GAPS
    parts = [draw.choice(["", "", "-- banner\n", "/* v1 */ ", "\n"])]
    for n, tok in enumerate(tokens):
        gap = draw.choice(gaps) if n and draw.integer(0, 3) == 0 else " "
        parts.append((gap if n else "") + tok)
    parts.append(draw.choice(["", "", " -- end", "\n", " /* x */"]))
    return "".join(parts)


def generate(draw: Pick) -> str:
    """One generated text: a statement, mutated or not, laid out."""
    tokens = statement(draw)
    if draw.integer(0, 3):
        tokens = mutate(draw, tokens)
    return lay_out(draw, tokens)


sql_texts = st.composite(lambda draw: generate(Pick(draw)))()


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    with admin_session() as session:
        yield session


def assert_both_oracles_agree(session: Session, sql: str) -> None:
    if not _check(sql).allowed:
        return
    words, strings = sql_server_lex(sql)  # raises if SQL Server would not even lex it
    assert (sorted(words), strings) == check_words_and_strings(sql), sql
    assert_only_one_select(session, sql)


# Deterministic and bounded (drawing a statement costs hypothesis ~50 ms); long runs use main().
EXAMPLES = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def test_the_generator_makes_what_the_check_allows() -> None:
    # The harness can fail: unmutated, generated statements pass the check (else it tests nothing).
    sql = "WITH w AS (SELECT 1 AS a) SELECT TOP (1) [o].id, N'x' FROM orders [o] WITH (NOLOCK)"
    assert _check(sql).allowed
    assert _check(sql + " DELETE FROM orders").allowed is False


@EXAMPLES
@given(sql=sql_texts)
# found by the generator against earlier versions of the check
@example(sql="SELECT 1 FROM t ORDER BY id OFFSET @p2ROWS FETCH FIRST 5 ROWS ONLY")
@example(sql="SELECT 1 FROM t ORDER BY id OFFSET 2 + ROWS FETCH NEXT 5 ROWS ONLY")
@example(sql='-- banner\nSELECTt1 . "total" EXCEPT SELECT 1. + -- c\n1.e3')
@example(sql='/* v1 */ AS SELECT"total" AS t1 -- c\n, 0x0 OPTION ( MAXDOP 1 -- c\n)')
@example(sql="SELECT 1 , CLOSE (\tc . -- c\nid ) -- end")
@example(sql="\nSELECT name AS t1 WHERE id IN/**/OPEN (\n1  , 2 ) ORDER BY id")
def test_what_the_check_allows_is_one_select_to_both_oracles(session: Session, sql: str) -> None:
    assert_both_oracles_agree(session, sql)


@settings(EXAMPLES, max_examples=40)
@given(sql=st.composite(lambda draw: " ".join(statement(Pick(draw))))())
def test_unmutated_statements(session: Session, sql: str) -> None:
    assert_both_oracles_agree(session, sql)


def main() -> None:
    """A long run with random.Random: every disagreement is printed, the run goes on."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=10_000)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    draw = Pick(rng=rng)
    with admin_session() as session:
        allowed = found = 0
        start = time.monotonic()
        for _ in range(args.count):
            sql = generate(draw)
            try:
                if _check(sql).allowed:
                    allowed += 1
                assert_both_oracles_agree(session, sql)
            except Exception as exc:
                found += 1
                print(f"DISAGREE {type(exc).__name__}: {sql!r}", flush=True)
        elapsed = time.monotonic() - start
        print(
            f"seed {args.seed}: {args.count} texts, {allowed} allowed, {found} disagreements, "
            f"{elapsed:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
