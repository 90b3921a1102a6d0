"""Is this T-SQL batch a plain read? A fail-closed check used by read-only roles.

Strategy (see ../shared/NOTES-tds.md for why the parser alone is not enough: sqlglot parses
``IF 1 = 1 DELETE FROM t`` as a SELECT-looking IfBlock, ``BEGIN TRY`` as an opaque Command, and
``OPENROWSET``/``NEXT VALUE FOR`` as plain SELECTs):

1. Tokenize with sqlglot's T-SQL tokenizer. Strings and quoted ``[identifiers]`` are their own
   token types and comments are dropped, so ``'..DELETE..'`` and ``[delete]`` are data, while a
   bare ``DELETE`` anywhere (even hidden behind a comment or after ``IF``) is a keyword. Any
   keyword on the deny-list refuses the batch, as does a ``;`` that is not the last token.
   Variable names (``@x``) and temp-table names (``#t``) are not keywords.
2. Parse with the T-SQL dialect: exactly one statement, and it must positively be an
   ``exp.Select`` or a UNION/INTERSECT/EXCEPT of them, with CTE bodies of the same kind; the
   tree must contain no DML/DDL/Command/INTO/NEXT VALUE FOR node and no OPEN* rowset function.
3. Anything else, including any exception from sqlglot, refuses. The function never raises.

Unquoted column names that collide with the deny-list (``kill``, ``backup``, ``set``...) must be
written in brackets (``[kill]``). This check is a second line: the role's SQL Server login
carries the real guarantee (grant it SELECT only).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from dataclasses import dataclass

from sqlglot import exp, parse
from sqlglot.dialects.tsql import TSQL
from sqlglot.errors import ErrorLevel
from sqlglot.tokenizer_core import Token, TokenType

__all__ = ["ReadOnlyVerdict", "check_read_only", "normalize_sql", "sql_fingerprint"]

#: Words that never appear in a plain read (outside strings and [quoted] names).
DENY_WORDS: frozenset[str] = frozenset(
    """
    INSERT UPDATE DELETE MERGE EXEC EXECUTE INTO DROP ALTER CREATE TRUNCATE GRANT REVOKE DENY
    SETUSER REVERT BULK WAITFOR SHUTDOWN KILL DBCC RECONFIGURE BACKUP RESTORE USE DECLARE SET IF
    WHILE BEGIN BREAK CONTINUE GOTO RETURN THROW RAISERROR PRINT COMMIT ROLLBACK SAVE TRAN
    TRANSACTION CHECKPOINT READTEXT WRITETEXT UPDATETEXT OPENROWSET OPENQUERY OPENDATASOURCE
    OPENXML LOAD DUMP DISABLE ENABLE TRIGGER SEND RECEIVE CONVERSATION GO CURSOR DEALLOCATE
    XLOCK UPDLOCK TABLOCK TABLOCKX HOLDLOCK PAGLOCK SERIALIZABLE REPEATABLEREAD
    SP_EXECUTESQL XP_CMDSHELL
    """.split()
)

# Token types holding data or quoted names, never keywords.
_DATA_TOKENS = frozenset(
    getattr(TokenType, name)
    for name in (
        "STRING",
        "NATIONAL_STRING",
        "IDENTIFIER",
        "HEX_STRING",
        "BIT_STRING",
        "BYTE_STRING",
        "RAW_STRING",
        "HEREDOC_STRING",
        "UNICODE_STRING",
        "NUMBER",
    )
    if hasattr(TokenType, name)
)

# Tree nodes that never belong in a read (names looked up so a sqlglot rename fails closed).
_DENY_NODES: tuple[type, ...] = tuple(
    getattr(exp, name)
    for name in (
        "DML",
        "DDL",
        "Insert",
        "Update",
        "Delete",
        "Merge",
        "Create",
        "Drop",
        "Alter",
        "Command",
        "Into",
        "NextValueFor",
        "TruncateTable",
        "Set",
        "Use",
        "Transaction",
        "Commit",
        "Rollback",
        "IfBlock",
        "WhileBlock",
        "Declare",
        "Grant",
        "Revoke",
        "Copy",
        "LoadData",
        "Pragma",
        "Kill",
        "Lock",
        "Execute",
    )
    if isinstance(getattr(exp, name, None), type)
)
_READ_ROOTS = (exp.Select, exp.Union, exp.Intersect, exp.Except)
_ROWSET_FUNCS = frozenset({"OPENROWSET", "OPENQUERY", "OPENDATASOURCE", "OPENXML"})
_TOKENIZER = TSQL.Tokenizer
# Where a "--" comment ends must not be in doubt: sqlglot ends it at CR or LF, and keeps going
# through VT/FF/NEL/U+2028... SQL Server may disagree on a lone CR or the exotic breaks, and a
# comment that ends in one reading but not the other can hide a statement. Refuse them all.
_AMBIGUOUS_BREAK = re.compile("\r(?!\n)|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x85\u2028\u2029]")
# sqlglot logs a warning with the SQL text when it falls back to a Command; keep SQL out of logs.
logging.getLogger("sqlglot").addFilter(lambda record: "unsupported syntax" not in str(record.msg))


@dataclass(frozen=True)
class ReadOnlyVerdict:
    """``allowed`` and, when refused, a ``reason`` that names keywords but echoes no values."""

    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


_REFUSE_HINT = "a read-only role may only run a single SELECT (no INTO, no batches)"


#: statements up to this many characters have their verdict remembered (see check_read_only)
_CACHED_SQL_CHARS = 4096


def check_read_only(sql: str) -> ReadOnlyVerdict:
    """Decide whether ``sql`` is one plain SELECT. Never raises: anything odd is refused.

    The verdict is a pure function of the text, so the last 1,024 verdicts for statements up to
    4 KiB are remembered by their exact text (an application sends the same parameterized
    statement again and again; the parse is the costly part). A check that raised is never
    remembered."""
    try:
        if isinstance(sql, str) and len(sql) <= _CACHED_SQL_CHARS:
            return _check_remembered(sql)
        return _check(sql)
    except Exception as exc:  # fail closed on any sqlglot surprise (RecursionError included)
        return ReadOnlyVerdict(False, f"statement could not be checked ({type(exc).__name__})")


def _check(sql: str) -> ReadOnlyVerdict:
    if not isinstance(sql, str) or not sql.strip():
        return ReadOnlyVerdict(False, "empty statement")
    if _AMBIGUOUS_BREAK.search(sql):
        return ReadOnlyVerdict(
            False,
            "statement contains a control character or a line break other than LF/CRLF, "
            "which SQL Server and this check might read differently (e.g. where a -- comment "
            "ends); use plain LF or CRLF line breaks",
        )
    tokens = _tokenize(sql)
    if isinstance(tokens, ReadOnlyVerdict):
        return tokens
    if not tokens:
        return ReadOnlyVerdict(False, "empty statement")
    verdict = _check_tokens(tokens)
    if not verdict.allowed:
        return verdict
    try:
        statements = [s for s in parse(sql, read="tsql", error_level=ErrorLevel.RAISE) if s]
    except Exception:
        return ReadOnlyVerdict(False, f"statement does not parse as T-SQL; {_REFUSE_HINT}")
    if len(statements) != 1:
        return ReadOnlyVerdict(False, f"{len(statements)} statements in one batch; {_REFUSE_HINT}")
    return _check_tree(statements[0])


_check_remembered = functools.lru_cache(maxsize=1024)(_check)


def _tokenize(sql: str) -> list[Token] | ReadOnlyVerdict:
    try:
        return list(_TOKENIZER().tokenize(sql))
    except Exception:
        return ReadOnlyVerdict(False, "statement does not tokenize (unterminated string/comment?)")


def _check_tokens(tokens: list[Token]) -> ReadOnlyVerdict:
    prev: Token | None = None
    for i, tok in enumerate(tokens):
        after_sigil = prev is not None and prev.token_type in (TokenType.PARAMETER, TokenType.HASH)
        prev = tok
        if tok.token_type == TokenType.SEMICOLON and i != len(tokens) - 1:
            return ReadOnlyVerdict(False, f"';' separates statements; {_REFUSE_HINT}")
        if tok.token_type in _DATA_TOKENS or after_sigil:
            continue
        for word in tok.text.upper().split():  # multi-word tokens such as "ORDER BY"
            if word in DENY_WORDS:
                return ReadOnlyVerdict(False, f"statement contains {word}; {_REFUSE_HINT}")
    return ReadOnlyVerdict(True, "")


def _check_tree(root: exp.Expr) -> ReadOnlyVerdict:
    if not isinstance(root, _READ_ROOTS):
        kind = _spaced(type(root).__name__)
        return ReadOnlyVerdict(False, f"statement is a {kind}, not a SELECT; {_REFUSE_HINT}")
    for node in root.walk():
        if isinstance(node, _DENY_NODES):
            kind = _spaced(type(node).__name__)
            return ReadOnlyVerdict(False, f"statement contains {kind}; {_REFUSE_HINT}")
        if isinstance(node, exp.CTE) and not isinstance(node.this, _READ_ROOTS):
            return ReadOnlyVerdict(False, f"a CTE body is not a SELECT; {_REFUSE_HINT}")
        if isinstance(node, exp.Func):
            name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
            if str(name).upper() in _ROWSET_FUNCS:
                return ReadOnlyVerdict(False, f"statement calls {name.upper()}; {_REFUSE_HINT}")
    return ReadOnlyVerdict(True, "")


def _spaced(class_name: str) -> str:
    """``NextValueFor`` -> ``NEXT VALUE FOR`` (for messages)."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", class_name).upper()


def normalize_sql(sql: str) -> str:
    """SQL with literals replaced by ``?``, keywords upper-cased and whitespace/comments dropped.

    Two statements that differ only in literal values or layout normalize to the same text, so
    their fingerprints group them in the audit log without recording the values.
    """
    try:
        tokens = _TOKENIZER().tokenize(sql)
    except Exception:
        return " ".join(sql.split())
    out = []
    for tok in tokens:
        if tok.token_type in _DATA_TOKENS and tok.token_type != TokenType.IDENTIFIER:
            out.append("?")
        elif tok.token_type == TokenType.IDENTIFIER:
            out.append(f"[{tok.text}]")
        elif tok.token_type == TokenType.VAR:
            out.append(tok.text.lower())
        else:
            out.append(tok.text.upper())
    return " ".join(out)


def sql_fingerprint(sql: str) -> str:
    """Hex sha256 of :func:`normalize_sql`."""
    return hashlib.sha256(normalize_sql(sql).encode("utf-8")).hexdigest()
