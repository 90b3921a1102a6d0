"""The read-only check against a second, independent T-SQL lexer: whatever it allows, a lexer that
cuts the text as SQL Server's documentation says (nested comments, '' and ]] escapes, numbers,
0x and money literals, names of Unicode 3.2 letters) finds the same words and strings.

The check reads the text with sqlglot's tokenizer; tdslite (the differential test) does too, so a
token sqlglot cuts wrongly can fool both. This lexer shares no code with sqlglot.
"""

from __future__ import annotations

import unicodedata

from hypothesis import example, given, settings
from hypothesis import strategies as st

from connector._readonly import _check, _text_items, _tokenize


def _name_char(c: str, *, first: bool = False) -> bool:
    if c in "_@#":
        return True
    if c == "$" or c.isascii():
        return c == "$" and not first or c.isascii() and (c.isalpha() or c.isdigit() and not first)
    category = unicodedata.ucd_3_2_0.category(c)
    return c <= "\uffff" and (category[0] == "L" or category == "Nd" and not first)


def _skip_blank(s: str, i: int) -> int:
    while i < len(s):
        if s[i] in " \t\r\n":
            i += 1
        elif s.startswith("--", i):
            end = s.find("\n", i)
            i = len(s) if end < 0 else end
        elif s.startswith("/*", i):
            depth, i = 1, i + 2
            while depth:
                if i >= len(s):
                    raise ValueError("unclosed comment")
                step = 2 if s.startswith(("/*", "*/"), i) else 1
                depth += {"/*": 1, "*/": -1}.get(s[i : i + 2], 0) if step == 2 else 0
                i += step
        else:
            break
    return i


def _quoted(s: str, i: int, close: str) -> int:
    """The index after the closing ``close`` of the quoted text opening at ``i``."""
    j = i + 1
    while True:
        k = s.find(close, j)
        if k < 0:
            raise ValueError("unclosed quote")
        if not s.startswith(close * 2, k):
            return k + 1
        j = k + 2


def _digits(s: str, i: int) -> int:
    while i < len(s) and s[i] in "0123456789":
        i += 1
    return i


def _number_end(s: str, i: int) -> int:
    j = _digits(s, i)
    if j < len(s) and s[j] == ".":
        j = _digits(s, j + 1)
    if j < len(s) and s[j] in "eE":
        k = j + 1 + (j + 1 < len(s) and s[j + 1] in "+-")
        if _digits(s, k) > k:
            j = _digits(s, k)
    return j


def sql_server_lex(s: str) -> tuple[list[str], list[str]]:
    """The upper-case words and the strings of ``s`` as SQL Server cuts them."""
    words: list[str] = []
    strings: list[str] = []
    i = _skip_blank(s, 0)
    while i < len(s):
        c = s[i]
        if c == "'" or c in "Nn" and s.startswith("'", i + 1):
            end = _quoted(s, i + (c != "'"), "'")
            strings.append(s[i:end])
        elif c in '["':
            end = _quoted(s, i, "]" if c == "[" else '"')
        elif s.startswith(("0x", "0X"), i):
            end = i + 2
            while end < len(s) and s[end] in "0123456789abcdefABCDEF":
                end += 1
        elif c in "0123456789" or c == "." and s[i + 1 : i + 2].isdigit():
            end = _number_end(s, i)
        elif unicodedata.category(c) == "Sc":
            end = _digits(s, i + 1)
        elif _name_char(c, first=True):
            end = i + 1
            while end < len(s) and _name_char(s[end]):
                end += 1
            words.append(s[i:end].upper())
        else:
            end = i + 1
        i = _skip_blank(s, end)
    return words, strings


def check_words_and_strings(sql: str) -> tuple[list[str], list[str]]:
    tokens = _tokenize(sql)
    assert isinstance(tokens, list)
    words, _, _ = _text_items(tokens)
    named = sorted(
        part
        for w in words.elements()
        for part in w.split()  # a multi-word token such as ORDER BY
        if any(c.isalnum() or c in "_@#$" for c in part)
    )
    strings = [sql[t.start : t.end + 1] for t in tokens if t.token_type.name.endswith("STRING")]
    return named, [s for s in strings if s[:1] in "'Nn"]


PIECES = [
    "'", '"', "[", "]", "--", "/*", "*/", "*/*", "/*/", "N'", "\n", "\r\n", "#", "@", "@@", "x",
    "1", "1e", "1.", ".", "0x", "0x1", "''", "]]", '""', " AS ", "-", "/", "*", "e", "E5", "$",
    " ", "DELETE", "FROM", "t", "SELECT", "CLOSE", "(", ")", ",", "=", "N", "_", "\u00e9",
    "\u20ac", ":", "::", "|", "!", "<", ">", "+", "~", "?", "{", "\\", "\u0661", "\u00b2",
    "\uff24", "-|-", "#>",
]  # fmt: skip


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(
    first=st.sampled_from(["SELECT 1 ", "SELECT id FROM t ", "SELECT ", "SELECT a"]),
    pieces=st.lists(st.sampled_from(PIECES), min_size=1, max_size=8),
)
# found by this lexer against earlier versions of the check
@example(first="SELECT 1 ", pieces=[".", "1e", "."])
@example(first="SELECT ", pieces=["0x1", "_", "1"])
@example(first="SELECT 1 ", pieces=[".", "0x1"])
@example(first="SELECT a", pieces=["<", "\u0661", "DELETE"])
@example(first="SELECT 1 ", pieces=["\u136b", "SELECT"])
@example(first="SELECT ", pieces=["N", '"', "x", '"'])
@example(first="SELECT 1 ", pieces=["-|-", "-", "'", "\n", "DELETE", " ", "--", "'"])
@example(first="SELECT 1 ", pieces=["/*", " ", "/*", " ", "*/*", " ", "*/", " ", "DELETE", '"'])
@example(first="SELECT 1 ", pieces=[".", "1.", "E5"])
def test_what_the_check_allows_lexes_the_same_for_sql_server(first: str, pieces: list[str]) -> None:
    sql = first + "".join(pieces)
    if not _check(sql).allowed:
        return
    words, strings = sql_server_lex(sql)  # raises if SQL Server would not even lex it
    assert (sorted(words), strings) == check_words_and_strings(sql), sql


def test_the_lexer_sees_what_sqlglot_hides() -> None:
    # the harness can fail: SQL Server's words where sqlglot sees a comment, a string or a number
    sql = 'SELECT 1 /* /* */* */ DELETE FROM orders SELECT 2 AS "*/" -- "'
    assert sql_server_lex(sql)[0] == ["SELECT", "DELETE", "FROM", "ORDERS", "SELECT", "AS"]
    assert check_words_and_strings(sql)[0] == ["SELECT"]
    assert sql_server_lex("SELECT 1 .1e.")[0] == ["SELECT", "E"]
    assert sql_server_lex("SELECT 'it''s', [a]]b], N'x' -- c\n")[1] == ["'it''s'", "N'x'"]
