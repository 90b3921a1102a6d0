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

Parsing costs microseconds per character (seconds for a megabyte), so the connector never runs it
on its event loop: :class:`ReadOnlyChecker` runs it in a worker thread with its own limiter and a
time budget, and verdicts are remembered by the SHA-256 of the text (see :func:`check_read_only`).

Unquoted column names that collide with the deny-list (``kill``, ``backup``, ``set``...) must be
written in brackets (``[kill]``). This check is a second line: the role's SQL Server login
carries the real guarantee (grant it SELECT only).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

import trio
from sqlglot import exp, parse
from sqlglot.dialects.tsql import TSQL
from sqlglot.errors import ErrorLevel
from sqlglot.tokenizer_core import Token, TokenType

__all__ = [
    "CheckTimeout",
    "ReadOnlyChecker",
    "ReadOnlyVerdict",
    "check_read_only",
    "normalize_sql",
    "sql_fingerprint",
]

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


class _Verdicts:
    """The last ``maxsize`` verdicts, keyed by the SHA-256 of the statement (a fixed 32 bytes
    whatever the statement's size, so a megabyte statement costs no more to remember than
    ``SELECT 1``). Thread-safe: checks run in worker threads."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._items: OrderedDict[bytes, ReadOnlyVerdict] = OrderedDict()

    def get(self, key: bytes) -> ReadOnlyVerdict | None:
        with self._lock:
            verdict = self._items.get(key)
            if verdict is not None:
                self._items.move_to_end(key)
            return verdict

    def put(self, key: bytes, verdict: ReadOnlyVerdict) -> None:
        with self._lock:
            self._items[key] = verdict
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


#: The remembered verdicts (see check_read_only).
_VERDICTS = _Verdicts(maxsize=1024)


def _key(sql: str) -> bytes:
    # surrogatepass: a lone surrogate (valid JSON, invalid UTF-8) still hashes, to its own key
    return hashlib.sha256(sql.encode("utf-8", "surrogatepass")).digest()


def remembered_verdict(sql: str) -> ReadOnlyVerdict | None:
    """The remembered verdict for exactly this text, or None. A hash, never a parse."""
    return _VERDICTS.get(_key(sql)) if isinstance(sql, str) else None


def check_read_only(sql: str) -> ReadOnlyVerdict:
    """Decide whether ``sql`` is one plain SELECT. Never raises: anything odd is refused.

    The verdict is a pure function of the text, so the last 1,024 verdicts, refusals included,
    are remembered by the SHA-256 of the text, for statements of any size (an application sends
    the same statement again and again; the parse is the costly part). A check that raised is
    never remembered: its refusal says nothing about the text.

    This parses on the calling thread; the connector calls it through :class:`ReadOnlyChecker`.
    """
    if not isinstance(sql, str):
        return ReadOnlyVerdict(False, "empty statement")
    return _check_remembered(sql)


def _check_remembered(sql: str) -> ReadOnlyVerdict:
    key = _key(sql)
    verdict = _VERDICTS.get(key)
    if verdict is not None:
        return verdict
    try:
        verdict = _check(sql)
    except Exception as exc:  # fail closed on any sqlglot surprise (RecursionError included)
        return ReadOnlyVerdict(False, f"statement could not be checked ({type(exc).__name__})")
    _VERDICTS.put(key, verdict)
    return verdict


class CheckTimeout(Exception):
    """The read-only check did not finish within its budget; the statement is refused."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        super().__init__(f"the read-only check did not finish within {budget_s:g} s")


class ReadOnlyChecker:
    """Runs :func:`check_read_only` in worker threads so that parsing never blocks the event loop.

    Statements of up to ``small_chars`` characters parse in their own lane (``small_threads``),
    so a few huge statements occupying the ``threads`` lane never hold up a small one. Both lanes
    have their own :class:`trio.CapacityLimiter`, apart from the database pools' limiters, so
    parses can never take the threads python-tds needs. One thread for big statements: parses
    hold the GIL (sqlglot is compiled and keeps it for tens of milliseconds at a time on a big
    statement), so a second parse thread would add no throughput, only contention with the event
    loop.

    Args:
        threads: worker threads for statements longer than ``small_chars``.
        small_threads: worker threads for statements of at most ``small_chars``.
        small_chars: where the small lane ends.
        max_budget_s: the longest any one check may take, whatever the query's timeout.
    """

    def __init__(
        self,
        *,
        threads: int = 1,
        small_threads: int = 2,
        small_chars: int = 16 * 1024,
        max_budget_s: float = 5.0,
    ) -> None:
        self.limiter = trio.CapacityLimiter(threads)
        self.small_limiter = trio.CapacityLimiter(small_threads)
        self.small_chars = small_chars
        self.max_budget_s = max_budget_s

    def limiter_for(self, sql: str | None) -> trio.CapacityLimiter:
        """The lane for work that tokenizes ``sql`` (the check; the audit's fingerprint)."""
        small = not isinstance(sql, str) or len(sql) <= self.small_chars
        return self.small_limiter if small else self.limiter

    async def check(self, sql: str, *, budget_s: float) -> ReadOnlyVerdict:
        """The verdict for ``sql``, computed in a worker thread unless it is remembered.

        Args:
            sql: the statement.
            budget_s: how long the check may take (waiting for a thread included); it is capped
                at ``max_budget_s``.

        Raises:
            CheckTimeout: the budget ran out. The caller refuses the statement.
        """
        verdict = remembered_verdict(sql)
        if verdict is not None:
            return verdict
        budget_s = max(0.0, min(budget_s, self.max_budget_s))
        limiter = self.limiter_for(sql)
        # When the budget runs out the thread cannot be stopped: abandon_on_cancel returns at
        # once and the parse finishes on its own, its verdict then remembered for the next try.
        # Its cost is bounded: the statement is at most the role's max_statement_bytes (checked
        # before any parse), and the abandoned thread keeps its limiter slot until it ends, so at
        # most `threads` + `small_threads` parses ever run at once, abandoned ones included.
        with trio.move_on_after(budget_s):
            return await trio.to_thread.run_sync(
                check_read_only, sql, limiter=limiter, abandon_on_cancel=True
            )
        raise CheckTimeout(budget_s)


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
