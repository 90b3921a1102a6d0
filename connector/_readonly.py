"""Is this T-SQL batch a plain read? A fail-closed check used by read-only roles.

The check reads the text with sqlglot's T-SQL tokenizer and parser, and SQL Server reads it with
its own. Wherever the two readings could differ, the check refuses: it allows a batch only when
every token of the whole text is accounted for by exactly one SELECT. Why the parser alone is not
enough: sqlglot parses ``IF 1 = 1 DELETE FROM t`` as a SELECT-looking IfBlock, ``BEGIN TRY`` as an
opaque Command, ``OPENROWSET``/``NEXT VALUE FOR`` as plain SELECTs, and ``SELECT 1 # DELETE FROM t``
as one SELECT with the alias ``#DELETE``, while SQL Server (which needs no ``;`` between
statements and takes a lone ``#`` as a name) runs ``SELECT 1 #`` and then the DELETE.

1. Characters. Control characters are refused anywhere; line breaks other than LF/CRLF, Unicode
   spaces and invisible format characters outside strings and quoted names (they decide where a
   ``--`` comment ends and where a word ends, and SQL Server and sqlglot need not agree which of
   them are white space; inside a string they are data, as a string ends only at its quote).
2. Lexemes, where SQL Server's lexer and sqlglot's may cut the text differently: a ``#``, ``##``,
   ``@`` or ``@@`` not immediately followed by a name (SQL Server reads it as a name of its own);
   a name starting with ``$`` or holding a character SQL Server does not allow in a name (``$``
   and currency signs start money literals: ``$DELETE`` is ``$`` then DELETE); ``\\`` (a currency
   sign to SQL Server); ``{ }`` (ODBC escapes); a ``0x`` literal running into letters; two words
   or numbers run together (``1DELETE``); a comment holding the other kind of comment marker
   (``--`` inside ``/* */``, or ``/*`` ``*/`` after ``--``: which marker wins decides where the
   comment ends, and ``/* -- /* <LF> */ DELETE ... -- */`` is one comment to sqlglot). What
   sqlglot skips between two tokens must be white space and comments as SQL Server reads them,
   ending where sqlglot ended them: sqlglot counts the ``/`` of ``*/*`` again as an opener
   (``SELECT 1 /* /* */* */ DELETE FROM t SELECT 2 AS "*/" -- "`` is one SELECT with an alias
   to it, three statements to SQL Server), so overlapping markers ``*/*`` and ``/*/`` are
   refused, and it skips ``{# #}`` as a template comment (``{`` is code to SQL Server). A
   name's letters are Unicode 3.2's within the Basic Multilingual Plane, as SQL Server's are;
   a word whose compatibility form is a keyword (full-width ``ＤＥＬＥＴＥ``) or that starts
   with a digit of another script, a number or ``0x`` literal that is no T-SQL one (``1e``,
   ``.1e.``, ``0x1_1``, ``.0x1``), ``N"..."`` (a string to sqlglot, a name N and a quoted name
   to SQL Server) and any operator T-SQL lacks (sqlglot knows other
   dialects': ``-|-`` swallows the first ``-`` of what SQL Server reads as ``--``, ``#>`` holds
   a lone ``#``) are refused.
3. Tokens. The first token must be SELECT, WITH or ``(`` (sqlglot skips a leading ``AS`` or
   ``+``). Any keyword on the deny-list refuses the batch, as does a ``;`` that is not the last
   token. Strings, ``[quoted]``/``"quoted"`` names and comments are data, so ``'..DELETE..'`` and
   ``[delete]`` pass; a name glued to its sigil (``@delete``, ``#t``) is one name to SQL Server too.
4. Parse the same tokens with the T-SQL dialect: exactly one statement, positively an
   ``exp.Select`` or a UNION/INTERSECT/EXCEPT of them, with CTE bodies of the same kind; no
   DML/DDL/Command/INTO/NEXT VALUE FOR node, no OPEN* rowset function, FETCH only as ``ORDER BY
   ... OFFSET ... ROWS FETCH ... ROWS ONLY`` (``SELECT 1 FETCH c`` is a cursor statement to SQL
   Server, and so may be the FETCH of ``OFFSET @n FETCH ...``, paging to sqlglot)
   and TABLESAMPLE only after a table; no four-part table name ``server.db.schema.table``: it
   reads through a linked server as whatever remote login that server maps the caller to, which
   the role's own login (the real guarantee, below) does not bound. Three-part names
   (``db.dbo.t``) stay on this server and are allowed. A reserved keyword read as the name of a
   call (``CLOSE (x)``, ``OPEN (1)``) is refused, bar the full-text functions.
5. Coverage: the tree must account for the tokens. Every name in the tree is a word of the text
   (nothing merged, e.g. ``#`` and ``DELETE`` into ``#DELETE``); every string, number, quoted
   name, ``@``/``#`` name and reserved keyword used as a word is in the tree (nothing dropped);
   each SELECT, TOP and FETCH keyword makes exactly one Select, Limit and Fetch node (sqlglot
   also makes a Limit of LIMIT, which T-SQL lacks); and no SQL Server reserved keyword
   (``CLOSE``, ``OPEN``...) became a name or a kept word (a collation, a hint), since SQL
   Server never reads one unquoted as a name. CURRENT before ROW and WITHIN before GROUP are
   folded into flags by sqlglot and start no statement; JSON paths and FORMAT patterns are
   compared as sqlglot writes them back.
6. Anything else, including any exception from sqlglot, refuses. The function never raises.

Allowed on purpose: NOLOCK/READUNCOMMITTED and other table hints that take no locks beyond
a plain read's (the lock-taking ones, XLOCK, UPDLOCK, TABLOCK(X), HOLDLOCK, PAGLOCK,
SERIALIZABLE and REPEATABLEREAD, are on the deny-list); OPTION (...) query hints (they shape the
plan of this one read, and lock hints inside OPTION (TABLE HINT ...) meet the same deny-list);
``::`` static methods of CLR types (``geometry::Point``) and methods on columns: SQL Server itself
refuses mutator methods (``.modify()``, ``.Write()``) outside UPDATE ... SET. Calls of scalar or
table-valued functions are allowed: what a user-defined function may do is the business of the
EXECUTE permissions of the role's login, as are synonyms that point at a linked server.

Parsing costs microseconds per character (seconds for a megabyte), so the connector never runs it
on its event loop: :class:`ReadOnlyChecker` runs it in a worker process (a worker thread for
statements of at most 1 KiB) with its own limiter and a time budget, and verdicts are remembered
by the SHA-256 of the text (see :func:`check_read_only`).

Unquoted column names that collide with the deny-list or SQL Server's reserved keywords (``kill``,
``backup``, ``set``, ``open``, ``close``...) must be written in brackets (``[close]``), as SQL
Server itself requires for reserved keywords. This check is a second line: the role's SQL Server
login carries the real guarantee (grant it SELECT only).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import threading
import unicodedata
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, TypeVar

import trio
from sqlglot import exp
from sqlglot.dialects.tsql import TSQL
from sqlglot.errors import ErrorLevel
from sqlglot.tokenizer_core import Token, TokenType

__all__ = [
    "CheckTimeout",
    "ReadOnlyChecker",
    "ReadOnlyVerdict",
    "check_read_only",
    "normalize_sql",
    "remembered_fingerprint",
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
# How a query statement starts (after comments).
_QUERY_STARTS = frozenset({TokenType.SELECT, TokenType.WITH, TokenType.L_PAREN})
# Where a query may stand inside another: in parentheses (a Subquery; sqlglot keeps none under
# EXISTS/ALL/SOME, which it parses only with them), a side of UNION/INTERSECT/EXCEPT, a CTE's
# body. sqlglot also reads a bare SELECT as a table (FROM SELECT 1, JOIN/APPLY SELECT 2, a comma
# then SELECT) or an argument (ABS(SELECT 1)), where SQL Server reads a syntax error or, after
# a complete statement, a second one: never allowed.
_QUERY_PLACES = (exp.Subquery, exp.SetOperation, exp.CTE, exp.Exists, exp.All, exp.Any)
_ROWSET_FUNCS = frozenset({"OPENROWSET", "OPENQUERY", "OPENDATASOURCE", "OPENXML"})
# Reserved keywords that are also T-SQL functions sqlglot has no node of its own for (the full-text
# predicates and table functions); any other reserved keyword read as a function name is refused.
_RESERVED_FUNCTIONS = frozenset(
    {
        "CONTAINS",
        "CONTAINSTABLE",
        "FREETEXT",
        "FREETEXTTABLE",
        "SEMANTICKEYPHRASETABLE",
        "SEMANTICSIMILARITYDETAILSTABLE",
        "SEMANTICSIMILARITYTABLE",
    }
)
_TOKENIZER = TSQL.Tokenizer
# The parser runs on the tokens the checks above saw (one tokenization, not two).
_DIALECT = TSQL()
# Where a "--" comment ends, and what separates two words, must not be in doubt: sqlglot ends a
# comment at CR or LF and treats every Unicode space as white space; SQL Server may disagree on a
# lone CR, the exotic breaks (VT, FF, NEL, U+2028...), the Unicode spaces and the invisible format
# characters (zero-width space, BOM...). A comment that ends in one reading but not the other, or
# a word split in one but not the other, can hide a statement. Refuse them all, anywhere.
_AMBIGUOUS_ASCII = re.compile("\r(?!\n)|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Strings and quoted names: what is inside is data.
_QUOTED_TOKENS = frozenset({TokenType.STRING, TokenType.NATIONAL_STRING, TokenType.IDENTIFIER})
# Unicode categories refused outside ASCII: controls, format characters, spaces and separators,
# private use, surrogates and unassigned code points.
_AMBIGUOUS_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Co", "Cs", "Cn"})
#: SQL Server's reserved keywords: never a name unless [quoted] (so a tree that reads one as a
#: name has read the text differently from SQL Server).
RESERVED_WORDS: frozenset[str] = frozenset(
    """
    ADD ALL ALTER AND ANY AS ASC AUTHORIZATION BACKUP BEGIN BETWEEN BREAK BROWSE BULK BY CASCADE
    CASE CHECK CHECKPOINT CLOSE CLUSTERED COALESCE COLLATE COLUMN COMMIT COMPUTE CONSTRAINT
    CONTAINS CONTAINSTABLE CONTINUE CONVERT CREATE CROSS CURRENT CURRENT_DATE CURRENT_TIME
    CURRENT_TIMESTAMP CURRENT_USER CURSOR DATABASE DBCC DEALLOCATE DECLARE DEFAULT DELETE DENY
    DESC DISK DISTINCT DISTRIBUTED DOUBLE DROP DUMP ELSE END ERRLVL ESCAPE EXCEPT EXEC EXECUTE
    EXISTS EXIT EXTERNAL FETCH FILE FILLFACTOR FOR FOREIGN FREETEXT FREETEXTTABLE FROM FULL
    FUNCTION GOTO GRANT GROUP HAVING HOLDLOCK IDENTITY IDENTITY_INSERT IDENTITYCOL IF IN INDEX
    INNER INSERT INTERSECT INTO IS JOIN KEY KILL LEFT LIKE LINENO LOAD MERGE NATIONAL NOCHECK
    NONCLUSTERED NOT NULL NULLIF OF OFF OFFSETS ON OPEN OPENDATASOURCE OPENQUERY OPENROWSET
    OPENXML OPTION OR ORDER OUTER OVER PERCENT PIVOT PLAN PRECISION PRIMARY PRINT PROC PROCEDURE
    PUBLIC RAISERROR READ READTEXT RECONFIGURE REFERENCES REPLICATION RESTORE RESTRICT RETURN
    REVERT REVOKE RIGHT ROLLBACK ROWCOUNT ROWGUIDCOL RULE SAVE SCHEMA SECURITYAUDIT SELECT
    SEMANTICKEYPHRASETABLE SEMANTICSIMILARITYDETAILSTABLE SEMANTICSIMILARITYTABLE SESSION_USER
    SET SETUSER SHUTDOWN SOME STATISTICS SYSTEM_USER TABLE TABLESAMPLE TEXTSIZE THEN TO TOP TRAN
    TRANSACTION TRIGGER TRUNCATE TRY_CONVERT TSEQUAL UNION UNIQUE UNPIVOT UPDATE UPDATETEXT USE
    USER VALUES VARYING VIEW WAITFOR WHEN WHERE WHILE WITH WITHIN WRITETEXT
    """.split()
)
_KEYWORDS = DENY_WORDS | RESERVED_WORDS
# T-SQL's numbers and binary literals, as sqlglot's token text must read (its NUMBER token also
# takes "1e", "1e." and digits of other scripts; its HEX_STRING "0x1_1").
_NUMBER = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX = re.compile(r"0[xX][0-9a-fA-F]*")
# Reserved words SQL Server reads as niladic functions: fine as a bare column of the tree.
_NILADIC = frozenset({"USER", "CURRENT_USER", "SESSION_USER", "SYSTEM_USER", "CURRENT_TIMESTAMP"})
# "#", "##", "@", "@@" glued to a name make one name (#temp, ##global, @var, @@ROWCOUNT).
_SIGILS = frozenset({TokenType.HASH, TokenType.PARAMETER})
_SIGIL_RUNS = frozenset({"#", "##", "@", "@@"})
# Tokens SQL Server reads differently or not at all: "\\" is a currency sign (money literal),
# "{ }" open ODBC escapes.
_ODD_TOKENS = {
    TokenType.BACKSLASH: "\\ (a currency sign to SQL Server)",
    TokenType.L_BRACE: "{ (an ODBC escape)",
    TokenType.R_BRACE: "} (an ODBC escape)",
}
# T-SQL's operators and punctuation. sqlglot also knows other dialects' operators (-|-, #>>,
# ==, :=, ??...): SQL Server reads those as several tokens, a "--" formed with a neighbour as a
# comment (1 -|--' <LF> ... ' is a string to sqlglot) and a "#" in them as a name.
_OPERATORS = frozenset("+ - * / % & | ^ ~ = > < >= <= <> != !< !> ( ) , . ; :: || << >>".split())
# Each of these keywords makes exactly one node of the tree: a SELECT, TOP or FETCH the parser
# invented (T-SQL has no LIMIT: sqlglot makes TOP a Limit) or swallowed is a misreading.
_COUNTED: tuple[tuple[TokenType, type[exp.Expr], str], ...] = (
    (TokenType.SELECT, exp.Select, "SELECT"),
    (TokenType.TOP, exp.Limit, "TOP"),
    (TokenType.FETCH, exp.Fetch, "FETCH"),
)
# The date-part argument of these is rewritten by sqlglot (yy -> YEAR): not a name to account for.
_DATE_PART_FUNCS = frozenset(
    {"DATEADD", "DATEDIFF", "DATEDIFF_BIG", "DATEPART", "DATENAME", "DATETRUNC", "DATE_BUCKET"}
)
# Reserved words sqlglot folds into a flag when the word after them follows (a window frame's
# CURRENT ROW, an ordered set's WITHIN GROUP): no statement starts with them.
_PHRASES = {"CURRENT": "ROW", "WITHIN": "GROUP"}
# sqlglot's tree holds these strings rewritten (JSON paths, FORMAT patterns): read them back from
# the node's T-SQL.
_REWRITES_STRINGS = (exp.JSONPath, exp.TimeToStr, exp.NumberToStr)
# sqlglot logs a warning with the SQL text when it falls back to a Command; keep SQL out of logs.
log = logging.getLogger(__name__)
logging.getLogger("sqlglot").addFilter(lambda record: "unsupported syntax" not in str(record.msg))


@dataclass(frozen=True)
class ReadOnlyVerdict:
    """``allowed`` and, when refused, a ``reason`` that names keywords but echoes no values."""

    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


_REFUSE_HINT = "a read-only role may only run a single SELECT (no INTO, no batches)"


_AMBIGUOUS_REFUSAL = ReadOnlyVerdict(
    False,
    "statement contains a control character, or outside a string an invisible or Unicode space "
    "character or a line break other than LF/CRLF, which SQL Server and this check might read "
    "differently (e.g. where a -- comment ends); use plain spaces, tabs and LF or CRLF line "
    "breaks, and pass such characters as parameters",
)


_V = TypeVar("_V")


class _Remembered(Generic[_V]):
    """The last ``maxsize`` values, keyed by the SHA-256 of the statement (a fixed 32 bytes
    whatever the statement's size, so a megabyte statement costs no more to remember than
    ``SELECT 1``). Thread-safe: checks run in worker threads."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._items: OrderedDict[bytes, _V] = OrderedDict()

    def get(self, key: bytes) -> _V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: bytes, value: _V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


#: the read-only verdicts
_Verdicts = _Remembered[ReadOnlyVerdict]


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


def _check_in_worker(sql: str) -> tuple[ReadOnlyVerdict, bool, int]:
    """Runs in a worker process: the verdict, whether it may be remembered (a check that raised
    is not), and the worker's pid."""
    verdict = check_read_only(sql)
    return verdict, remembered_verdict(sql) is verdict, os.getpid()


class ReadOnlyChecker:
    """Runs :func:`check_read_only` off the event loop: big statements in worker PROCESSES.

    A parse holds the GIL (sqlglot is compiled and keeps it for tens of milliseconds at a time on
    a big statement), so a parse in a thread of the connector's own process still stalls the
    event loop: each time the loop waits for I/O it then waits up to the interpreter's switch
    interval to get the GIL back. Statements longer than ``inline_chars`` therefore parse in at
    most ``processes`` long-lived worker processes (trio-parallel), which share nothing with the
    loop; a parse that outlives its budget has its worker process killed (a new one is started on
    the next need) and the statement is refused. A worker that dies mid-parse (killed, out of
    memory, a crash in the parser) refuses the statement: never a pass.

    Statements of up to ``inline_chars`` characters parse in a worker thread of their own lane
    (``small_threads``): there a process round trip (about 0.3 ms measured, spawn excluded) would
    be a large share of the parse (about 6 us per character: ~6 ms at 1 KiB, ~1.2 ms at 256
    characters), and small statements never queue behind big ones that occupy the processes.
    The worker processes are started lazily, on the first big statement (about 0.2 s to spawn,
    counted against that statement's budget), and stopped by :meth:`aclose`.

    All lanes have their own limiters, apart from the database pools' limiters. ``limiter_for``
    also picks the thread lane for the audit's fingerprint, which tokenizes the statement.

    Args:
        processes: worker processes for statements longer than ``inline_chars``.
        small_threads: worker threads for statements of at most ``inline_chars``.
        threads: worker threads for other work on long statements (the audit's fingerprint).
        inline_chars: where the thread lane ends and the process lane begins.
        max_budget_s: the longest any one check may take, whatever the query's timeout.
    """

    def __init__(
        self,
        *,
        processes: int = 1,
        small_threads: int = 2,
        threads: int = 1,
        inline_chars: int = 1024,
        max_budget_s: float = 5.0,
    ) -> None:
        self.process_limiter = trio.CapacityLimiter(processes)
        self.limiter = trio.CapacityLimiter(threads)
        self.small_limiter = trio.CapacityLimiter(small_threads)
        self.inline_chars = inline_chars
        self.max_budget_s = max_budget_s
        #: pids of the worker processes that have answered a check (logged once each)
        self.worker_pids: set[int] = set()
        self._workers: Any = None  # trio_parallel.WorkerContext, opened on first use
        self._exit = contextlib.AsyncExitStack()
        self._closed = False

    def limiter_for(self, sql: str | None) -> trio.CapacityLimiter:
        """The thread lane for work that tokenizes ``sql`` (the audit's fingerprint)."""
        small = not isinstance(sql, str) or len(sql) <= self.inline_chars
        return self.small_limiter if small else self.limiter

    async def check(self, sql: str, *, budget_s: float) -> ReadOnlyVerdict:
        """The verdict for ``sql``, computed off the event loop unless it is remembered.

        Args:
            sql: the statement.
            budget_s: how long the check may take (waiting for a worker, and starting one,
                included); it is capped at ``max_budget_s``.

        Raises:
            CheckTimeout: the budget ran out. The caller refuses the statement.
        """
        verdict = remembered_verdict(sql)
        if verdict is not None:
            return verdict
        budget_s = max(0.0, min(budget_s, self.max_budget_s))
        with trio.move_on_after(budget_s):
            if not isinstance(sql, str) or len(sql) <= self.inline_chars:
                # a thread cannot be stopped: abandon_on_cancel returns at once and the parse
                # (of at most inline_chars, a few ms) ends on its own, keeping its slot till then
                return await trio.to_thread.run_sync(
                    check_read_only, sql, limiter=self.small_limiter, abandon_on_cancel=True
                )
            return await self._check_in_process(sql)
        raise CheckTimeout(budget_s)

    async def _check_in_process(self, sql: str) -> ReadOnlyVerdict:
        import trio_parallel  # here, not at import: `edgetds --version` never needs it

        if self._closed:
            return ReadOnlyVerdict(
                False, "statement could not be checked: the connector is stopping"
            )
        if self._workers is None:
            self._workers = await self._exit.enter_async_context(
                trio_parallel.open_worker_context(idle_timeout=math.inf, grace_period=5.0)
            )
        try:
            # kill_on_cancel: when the budget runs out, the worker process is killed (and
            # reaped) before this returns; the next check starts a new one
            answer: tuple[ReadOnlyVerdict, bool, int] = await self._workers.run_sync(
                self._job, sql, kill_on_cancel=True, limiter=self.process_limiter
            )
        except (trio_parallel.BrokenWorkerError, OSError, EOFError) as exc:
            log.warning("read-only check: the parse worker process failed (%s)", type(exc).__name__)
            return ReadOnlyVerdict(
                False,
                "statement could not be checked: the parse worker process died; send a shorter "
                "or simpler statement, or use a named query",
            )
        verdict, remembered, pid = answer
        if pid not in self.worker_pids:
            self.worker_pids.add(pid)
            log.info("read-only check: parse worker process %d started", pid)
        if remembered:
            _VERDICTS.put(_key(sql), verdict)
        return verdict

    #: what a worker process runs (a module-level function: it is pickled by reference)
    _job: Callable[[str], tuple[ReadOnlyVerdict, bool, int]] = staticmethod(_check_in_worker)

    async def aclose(self) -> None:
        """Stop the worker processes (idle ones exit when their pipe closes; a worker still
        running a check is waited for, at most a few seconds, then killed). Later checks of big
        statements are refused."""
        self._closed = True
        try:
            await self._exit.aclose()
        except Exception as exc:  # a worker that had to be killed: it is gone all the same
            log.warning("read-only check: parse workers stopped uncleanly (%s)", exc)
        self._workers = None


def _check(sql: str) -> ReadOnlyVerdict:
    if not isinstance(sql, str) or not sql.strip():
        return ReadOnlyVerdict(False, "empty statement")
    if _AMBIGUOUS_ASCII.search(sql):
        return _AMBIGUOUS_REFUSAL
    tokens = _tokenize(sql)
    if isinstance(tokens, ReadOnlyVerdict):
        return tokens
    if not tokens:
        return ReadOnlyVerdict(False, "empty statement")
    if _ambiguous_char(sql, tokens):
        return _AMBIGUOUS_REFUSAL
    for verdict in (_check_lexemes(sql, tokens), _check_tokens(tokens)):
        if not verdict.allowed:
            return verdict
    items = _text_items(tokens)  # before the parser sees (and may annotate) the tokens
    try:
        parser = _DIALECT.parser(error_level=ErrorLevel.RAISE)
        statements = [s for s in parser.parse(tokens, sql) if s]
    except Exception:
        return ReadOnlyVerdict(False, f"statement does not parse as T-SQL; {_REFUSE_HINT}")
    if len(statements) != 1:
        return ReadOnlyVerdict(False, f"{len(statements)} statements in one batch; {_REFUSE_HINT}")
    verdict = _check_tree(statements[0])
    if not verdict.allowed:
        return verdict
    return _check_coverage(statements[0], items)


def read_tokens(sql: str) -> list[Token] | ReadOnlyVerdict:
    """Steps 1 and 2 alone, for any statement (not only reads): the tokens, when SQL Server and
    sqlglot cut the text into the same lexemes, else the refusal (connector/_txcontrol.py)."""
    if _AMBIGUOUS_ASCII.search(sql):
        return _AMBIGUOUS_REFUSAL
    tokens = _tokenize(sql)
    if isinstance(tokens, ReadOnlyVerdict):
        return tokens
    if _ambiguous_char(sql, tokens):
        return _AMBIGUOUS_REFUSAL
    verdict = _check_lexemes(sql, tokens)
    return tokens if verdict.allowed else verdict


def _dot_number(sql: str, dot: int, number: Token) -> bool:
    """sqlglot cut a "." and then a number glued to it: does SQL Server read the same characters
    as one number from the "." (.5)? Not so for .1.E5 (.1, then "." and the name E5) or .0x1."""
    read = _NUMBER.match(sql, dot)
    return (
        number.token_type == TokenType.NUMBER and read is not None and read.end() == number.end + 1
    )


def _ambiguous_char(sql: str, tokens: list[Token]) -> bool:
    """A character SQL Server and sqlglot may read differently: any control character; other
    Unicode spaces, format, private-use or unassigned characters outside strings and quoted
    names (inside them they are data: a string ends only at its quote, and every character
    before it has passed this same check)."""
    if sql.isascii():
        return False
    outside, position = [], 0
    for tok in tokens:
        if tok.token_type in _QUOTED_TOKENS:
            outside.append(sql[position : tok.start])
            position = tok.end + 1
    outside.append(sql[position:])
    return any(unicodedata.category(c) == "Cc" for c in sql if c > "\x7f") or any(
        unicodedata.category(c) in _AMBIGUOUS_CATEGORIES for c in "".join(outside) if c > "\x7f"
    )


def _tokenize(sql: str) -> list[Token] | ReadOnlyVerdict:
    try:
        return list(_TOKENIZER().tokenize(sql))
    except Exception:
        return ReadOnlyVerdict(False, "statement does not tokenize (unterminated string/comment?)")


def _name_char(c: str) -> bool:
    """Can ``c`` be part of an unquoted SQL Server name? (letters, decimal digits, _ @ # $)

    SQL Server's letters are those of Unicode 3.2, not of the Unicode this Python knows: a
    letter added later (such as U+2C65) is no name character to it, and neither is a character
    beyond the Basic Multilingual Plane (two UTF-16 code units to SQL Server)."""
    if c in "_@#$" or c.isascii() and c.isalnum():
        return True
    category = unicodedata.ucd_3_2_0.category(c)
    return c <= "\uffff" and (category[0] == "L" or category == "Nd")


def _name_letter(c: str) -> bool:
    """Is ``c`` a letter to SQL Server (Unicode 3.2, Basic Multilingual Plane)?"""
    return c <= "\uffff" and unicodedata.ucd_3_2_0.category(c)[0] == "L"


def _glued(a: Token, b: Token) -> bool:
    return a.end + 1 == b.start


def _check_lexemes(sql: str, tokens: list[Token]) -> ReadOnlyVerdict:
    """Refuse where SQL Server's lexer may cut the text differently from sqlglot's."""
    gaps = zip([-1] + [t.end for t in tokens], [t.start for t in tokens] + [len(sql)], strict=True)
    for a, b in gaps:
        problem = _gap_problem(sql[a + 1 : b], last=b == len(sql))
        if problem:
            return ReadOnlyVerdict(False, f"{problem}; {_REFUSE_HINT}")
    for i, tok in enumerate(tokens):
        source = sql[tok.start : tok.end + 1]
        kind = tok.token_type
        if kind in _ODD_TOKENS:
            return ReadOnlyVerdict(False, f"statement contains {_ODD_TOKENS[kind]}; {_REFUSE_HINT}")
        if (
            source not in _OPERATORS
            and kind not in _DATA_TOKENS
            and kind not in _SIGILS
            and not any(c.isalnum() or c == "_" for c in source)
        ):
            return ReadOnlyVerdict(
                False, f"statement contains {source}, which is no T-SQL operator; {_REFUSE_HINT}"
            )
        if kind == TokenType.IDENTIFIER and source[:1] not in ('"', "["):
            # sqlglot's fallback for a 0x literal it cannot read (0x1SHUTDOWN): SQL Server reads
            # the hex digits as a binary literal and the rest as the next word.
            return ReadOnlyVerdict(False, f"a 0x binary literal runs into letters; {_REFUSE_HINT}")
        if i > 0 and _glued(tokens[i - 1], tok) and tokens[i - 1].token_type not in _SIGILS:
            if _name_char(sql[tokens[i - 1].end]) and _name_char(source[0]):
                return ReadOnlyVerdict(
                    False,
                    "two words or numbers run together (such as 1DELETE), which SQL Server may "
                    f"split differently; separate them with a space; {_REFUSE_HINT}",
                )
        if kind in _SIGILS:
            verdict = _check_sigil(sql, tokens, i)
            if not verdict.allowed:
                return verdict
        elif kind == TokenType.VAR and source[0] == "$":
            return ReadOnlyVerdict(
                False,
                "a word starts with $ (a money literal or pseudo-column to SQL Server); "
                f"{_REFUSE_HINT}",
            )
        elif kind == TokenType.VAR and not all(_name_char(c) for c in source):
            return ReadOnlyVerdict(
                False,
                "a name holds a character SQL Server does not allow in a name (a currency "
                f"sign starts a money literal); write such names in [brackets]; {_REFUSE_HINT}",
            )
        elif kind == TokenType.VAR and not (source[0] in "_@#" or _name_letter(source[0])):
            return ReadOnlyVerdict(
                False,
                "a name starts with a digit (of another script), which SQL Server reads as no "
                f"name; {_REFUSE_HINT}",
            )
        elif (
            (kind == TokenType.NUMBER and not _NUMBER.fullmatch(source))
            or (kind == TokenType.HEX_STRING and not _HEX.fullmatch(source))
            or (
                kind in (TokenType.HEX_STRING, TokenType.NUMBER)
                and i > 0
                and tokens[i - 1].token_type == TokenType.DOT
                and _glued(tokens[i - 1], tok)
                and not _dot_number(sql, tokens[i - 1].start, tok)
            )
        ):
            return ReadOnlyVerdict(
                False,
                "a number or 0x literal that SQL Server reads as a shorter one and a name (such "
                f"as 1e, .1e., .1.E5, .0x1 or 0x1_1); {_REFUSE_HINT}",
            )
        elif kind == TokenType.NATIONAL_STRING and source[1:2] != "'":
            return ReadOnlyVerdict(
                False, f'N"..." is a name N and a quoted name to SQL Server; {_REFUSE_HINT}'
            )
        glued_name = i > 0 and tokens[i - 1].token_type in _SIGILS and _glued(tokens[i - 1], tok)
        if kind not in _DATA_TOKENS and not source.isascii() and not glued_name:
            folded = unicodedata.normalize("NFKC", source).upper()
            keyword = next((w for w in folded.split() if w in _KEYWORDS), None)
            if keyword and keyword not in source.upper().split():
                return ReadOnlyVerdict(
                    False,
                    f"a word folds (full-width or other compatibility letters) to the keyword "
                    f"{keyword}, which SQL Server could read as that keyword; write names in "
                    f"[brackets]; {_REFUSE_HINT}",
                )
    return ReadOnlyVerdict(True, "")


_MIXED_COMMENT = (
    "a comment holds the other kind of comment marker (-- inside /* */, or /* */ after --), "
    "which readers may end in different places"
)
_NOT_BLANK = (
    "text between two tokens that SQL Server does not read as white space and comments (such "
    "as comment markers that overlap, */* or /*/, whose nesting readers count differently, or "
    "a {# #} template comment)"
)


_COMMENT_MARK = re.compile(r"/\*|\*/|--")


def _gap_problem(gap: str, *, last: bool) -> str | None:
    """What is wrong with this text between two tokens, if anything? sqlglot skipped it, so SQL
    Server must read all of it as white space and comments, ending each comment where sqlglot
    ended it: a ``--`` comment at LF (or the end of the batch), a ``/* */`` comment at the
    ``*/`` that closes the nesting. Overlapping markers (``*/*``, ``/*/``) are refused: sqlglot
    reads the ``/`` of ``*/*`` again as an opener, one nesting level more than SQL Server.
    A ``--`` inside ``/* */``, or a ``/*``/``*/`` after ``--``, is refused too: which of the
    two markers wins there is where readers could part ways on where the comment ends."""
    i = 0
    while i < len(gap):
        if gap[i] in " \t\r\n":
            i += 1
        elif gap.startswith("--", i):
            end = gap.find("\n", i)
            if end < 0 and not last:
                return _NOT_BLANK
            line = gap[i:] if end < 0 else gap[i:end]
            if "/*" in line or "*/" in line:
                return _MIXED_COMMENT
            i = len(gap) if end < 0 else end
        elif gap.startswith("/*", i):
            start, depth, i = i, 1, i + 2
            while depth:
                mark = _COMMENT_MARK.search(gap, i)
                if mark is None:
                    return _NOT_BLANK  # sqlglot ended the comment before SQL Server does
                if mark.group() == "--":
                    return _MIXED_COMMENT
                depth, i = depth + (1 if mark.group() == "/*" else -1), mark.end()
            if "*/*" in gap[start:i] or "/*/" in gap[start:i]:
                return _NOT_BLANK
        else:
            return _NOT_BLANK
    return None


def _check_sigil(sql: str, tokens: list[Token], i: int) -> ReadOnlyVerdict:
    """A run of sigils at ``i`` must be #, ##, @ or @@ glued to a name that follows it."""
    if i > 0 and tokens[i - 1].token_type in _SIGILS and _glued(tokens[i - 1], tokens[i]):
        return ReadOnlyVerdict(True, "")  # checked with the run's first sigil
    j = i
    while j + 1 < len(tokens) and tokens[j + 1].token_type in _SIGILS:
        if not _glued(tokens[j], tokens[j + 1]):
            break
        j += 1
    run = "".join(t.text for t in tokens[i : j + 1])
    name = tokens[j + 1] if j + 1 < len(tokens) else None
    if (
        run in _SIGIL_RUNS
        and name is not None
        and _glued(tokens[j], name)
        and name.token_type not in _DATA_TOKENS
        and _name_char(sql[name.start])
    ):
        return ReadOnlyVerdict(True, "")
    return ReadOnlyVerdict(
        False,
        f"a {run} not immediately followed by a name (SQL Server reads a lone {run} as a name "
        f"of its own, and what follows as the next statement); {_REFUSE_HINT}",
    )


def _check_tokens(tokens: list[Token]) -> ReadOnlyVerdict:
    for i, tok in enumerate(tokens):
        if tok.token_type == TokenType.SEMICOLON and i != len(tokens) - 1:
            return ReadOnlyVerdict(False, f"';' separates statements; {_REFUSE_HINT}")
        if tok.token_type == TokenType.FETCH and (
            i == 0 or tokens[i - 1].token_type not in (TokenType.ROW, TokenType.ROWS)
        ):
            # T-SQL's OFFSET n needs ROW(S) before FETCH: sqlglot takes OFFSET @n FETCH ... as
            # paging, SQL Server reads no paging there (a FETCH statement or a syntax error)
            return ReadOnlyVerdict(False, f"FETCH not right after OFFSET ... ROWS; {_REFUSE_HINT}")
        if tok.token_type in _DATA_TOKENS:
            continue
        # A word glued to its sigil is a name to SQL Server (@delete, #t); after a sigil with
        # anything between, it is a word like any other.
        if i > 0 and tokens[i - 1].token_type in _SIGILS and _glued(tokens[i - 1], tok):
            continue
        for word in tok.text.upper().split():  # multi-word tokens such as "ORDER BY"
            if word in DENY_WORDS:
                return ReadOnlyVerdict(False, f"statement contains {word}; {_REFUSE_HINT}")
    if tokens and tokens[0].token_type not in _QUERY_STARTS:
        # sqlglot skips some words before a query (AS SELECT 1 is SELECT 1 to it); SQL Server
        # starts a statement with them (a name that starts a batch is a procedure to execute)
        return ReadOnlyVerdict(
            False, f"the statement starts with no SELECT, WITH or (; {_REFUSE_HINT}"
        )
    return ReadOnlyVerdict(True, "")


def _check_tree(root: exp.Expr) -> ReadOnlyVerdict:
    if not isinstance(root, _READ_ROOTS):
        kind = _spaced(type(root).__name__)
        return ReadOnlyVerdict(False, f"statement is a {kind}, not a SELECT; {_REFUSE_HINT}")
    for node in root.walk():
        if isinstance(node, _DENY_NODES):
            kind = _spaced(type(node).__name__)
            return ReadOnlyVerdict(False, f"statement contains {kind}; {_REFUSE_HINT}")
        if (
            isinstance(node, exp.Query)
            and node is not root
            and not isinstance(node, exp.Subquery)
            and not isinstance(node.parent, _QUERY_PLACES)
        ):
            return ReadOnlyVerdict(
                False,
                "a SELECT inside the statement without parentheses around it (SQL Server reads "
                f"a new statement or a syntax error there); {_REFUSE_HINT}",
            )
        if isinstance(node, exp.SetOperation) and not (
            _is_query(node.this) and _is_query(node.expression)
        ):
            # sqlglot reads "x EXCEPT SELECT 1" with the column x as a side; SQL Server reads a
            # name that starts a batch as a procedure to execute
            return ReadOnlyVerdict(
                False,
                f"a side of UNION/INTERSECT/EXCEPT is not a SELECT; {_REFUSE_HINT}",
            )
        if isinstance(node, exp.Fetch) and not _offset_fetch(node):
            return ReadOnlyVerdict(
                False,
                f"FETCH outside ORDER BY ... OFFSET ... FETCH (FETCH alone is a cursor "
                f"statement to SQL Server); {_REFUSE_HINT}",
            )
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Dot):
            return ReadOnlyVerdict(
                False,
                "a four-part table name (server.database.schema.table) reads through a linked "
                "server, as whatever remote login that server maps to, beyond this role's own "
                f"login; {_REFUSE_HINT}",
            )
        if isinstance(node, exp.TableSample) and not isinstance(node.parent, exp.Table):
            return ReadOnlyVerdict(False, f"TABLESAMPLE not after a table; {_REFUSE_HINT}")
        if isinstance(node, exp.CTE) and not isinstance(node.this, _READ_ROOTS):
            return ReadOnlyVerdict(False, f"a CTE body is not a SELECT; {_REFUSE_HINT}")
        if isinstance(node, exp.Func):
            name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
            if str(name).upper() in _ROWSET_FUNCS:
                return ReadOnlyVerdict(False, f"statement calls {name.upper()}; {_REFUSE_HINT}")
            if (
                isinstance(node, exp.Anonymous)
                and str(name).upper() in RESERVED_WORDS
                and str(name).upper() not in _RESERVED_FUNCTIONS
                # a table hint WITH (INDEX(ix)) is the keyword INDEX to SQL Server too
                and not (
                    str(name).upper() == "INDEX" and isinstance(node.parent, exp.WithTableHint)
                )
            ):
                # sqlglot reads any word before "(" as a call; SQL Server reads a reserved
                # keyword (CLOSE (x), OPEN (1)) as that keyword, which may start a statement
                return ReadOnlyVerdict(
                    False,
                    f"the reserved keyword {str(name).upper()} is read as a function name; SQL "
                    f"Server never does that; {_REFUSE_HINT}",
                )
    return ReadOnlyVerdict(True, "")


def _is_query(node: object) -> bool:
    """A SELECT, a UNION/INTERSECT/EXCEPT, or one of them in parentheses."""
    while isinstance(node, exp.Subquery):
        node = node.this
    return isinstance(node, _READ_ROOTS)


def _offset_fetch(node: exp.Fetch) -> bool:
    """Is ``node`` the FETCH of ORDER BY ... OFFSET n ROWS FETCH NEXT m ROWS ONLY?"""
    select = node.parent
    offset = select.args.get("offset") if isinstance(select, exp.Select) else None
    return (
        isinstance(select, exp.Select)
        and select.args.get("limit") is node
        and offset is not None
        and select.args.get("order") is not None
        and node.args.get("limit_options") is not None
        # the ROW(S) before FETCH is the keyword, not a name the OFFSET expression took in
        # (OFFSET 2 + ROWS FETCH ...)
        and not any(
            str(name.this).upper() in ("ROW", "ROWS") and not name.quoted
            for name in offset.find_all(exp.Identifier)
        )
    )


def _number_key(text: str) -> str:
    try:
        return str(Decimal(text).normalize())
    except InvalidOperation:
        return text


_TextItems = tuple[Counter[str], Counter[tuple[str, str]], Counter[str]]


def _text_items(tokens: list[Token]) -> _TextItems:
    """What the text holds: its words (sigils glued, upper-case), the items the tree must hold
    (names, quoted names, strings, numbers) and how many of each `_COUNTED` keyword."""
    words: Counter[str] = Counter()
    needed: Counter[tuple[str, str]] = Counter()
    clauses: Counter[str] = Counter()
    prefix = ""
    for i, tok in enumerate(tokens):
        kind = tok.token_type
        prev = tokens[i - 1] if i > 0 else None
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        if kind in _SIGILS:
            if prefix and prev is not None and not _glued(prev, tok):
                words[prefix] += 1  # a lone sigil run: a name of its own to SQL Server
                needed["name", prefix] += 1
                prefix = ""
            prefix += tok.text
            continue
        glued_name = (
            prev is not None
            and _glued(prev, tok)
            and kind not in _DATA_TOKENS
            and _name_char(tok.text[0])
        )
        if prefix and not glued_name:
            words[prefix] += 1
            needed["name", prefix] += 1
            prefix = ""
        for token_type, _, keyword in _COUNTED:
            if kind == token_type:
                clauses[keyword] += 1
        if kind == TokenType.IDENTIFIER:
            needed["quoted", tok.text] += 1
        elif kind in (TokenType.STRING, TokenType.NATIONAL_STRING):
            needed["string", tok.text] += 1
        elif kind == TokenType.NUMBER:
            if not (prev is not None and prev.token_type == TokenType.DOT and _glued(prev, tok)):
                needed["number", _number_key(tok.text)] += 1
        elif kind not in _DATA_TOKENS:
            word = prefix + tok.text.upper()
            words[word] += 1
            function = after is not None and after.token_type == TokenType.L_PAREN
            date_part = (
                i >= 2
                and prev is not None
                and prev.token_type == TokenType.L_PAREN
                and tokens[i - 2].text.upper() in _DATE_PART_FUNCS
            )
            # sqlglot folds some plain words into flags (FETCH ... ROWS ONLY): only a reserved
            # keyword, which could start a statement of its own, or a @/# name must be kept.
            kept = prefix or (kind == TokenType.VAR and word in RESERVED_WORDS)
            phrase = after is not None and after.text.upper() == _PHRASES.get(word)
            if kept and not function and not date_part and not phrase:
                needed["name", word] += 1
        prefix = ""
    if prefix:
        words[prefix] += 1
        needed["name", prefix] += 1
    return words, needed, clauses


def _tree_name(node: exp.Expr) -> str:
    if isinstance(node, exp.Identifier):
        sigil = "##" if node.args.get("global_") else "#" if node.args.get("temporary") else ""
        return sigil + str(node.this).upper()
    depth = 0
    while isinstance(node, exp.Parameter):
        depth += 1
        node = node.this
    return "@" * depth + str(node.name).upper()


def _not_reserved(name: str) -> ReadOnlyVerdict:
    for word in name.split():  # a multi-word keyword token such as "CLUSTERED INDEX"
        if word in RESERVED_WORDS:
            return ReadOnlyVerdict(
                False,
                f"the reserved keyword {word} is read as a name; SQL Server never does that "
                f"(write it as [{word.lower()}] if it is a name); {_REFUSE_HINT}",
            )
    return ReadOnlyVerdict(True, "")


def _check_coverage(root: exp.Expr, items: _TextItems) -> ReadOnlyVerdict:
    """Does the tree account for every token, no more and no less? (see the module docstring)"""
    words, needed, clauses = items
    held: Counter[tuple[str, str]] = Counter()
    nodes: Counter[str] = Counter()
    for node in root.walk():
        for _, node_type, keyword in _COUNTED:
            if isinstance(node, node_type):
                nodes[keyword] += 1
        if isinstance(node, _REWRITES_STRINGS):
            for tok in _TOKENIZER().tokenize(node.sql("tsql")):
                if tok.token_type in (TokenType.STRING, TokenType.NATIONAL_STRING):
                    held["string", tok.text] += 1
        if isinstance(node, exp.Parameter) and isinstance(node.parent, exp.Parameter):
            continue
        if isinstance(node, exp.Var) and isinstance(node.parent, exp.Parameter):
            continue
        if isinstance(node, exp.Identifier) and node.quoted:
            held["quoted", str(node.this)] += 1
        elif isinstance(node, exp.Identifier | exp.Parameter):
            name = _tree_name(node)
            if name not in words:
                return ReadOnlyVerdict(
                    False, f"the parser merged or invented a name; {_REFUSE_HINT}"
                )
            bare_column = isinstance(node.parent, exp.Column) and not node.parent.table
            if not (bare_column and name in _NILADIC):
                verdict = _not_reserved(name)
                if not verdict.allowed:
                    return verdict
            held["name", name] += 1
        elif isinstance(node, exp.Var):
            # a word sqlglot keeps as is (a collation, hint or option name): never a reserved one
            name = str(node.this).upper()
            verdict = _not_reserved(name)
            if not verdict.allowed:
                return verdict
            held["name", name] += 1
        elif isinstance(node, exp.National):
            held["string", str(node.this)] += 1
        elif isinstance(node, exp.Literal) and node.is_string:
            held["string", str(node.this)] += 1
        elif isinstance(node, exp.Literal):
            held["number", _number_key(str(node.this))] += 1
    for _, _, keyword in _COUNTED:
        if nodes[keyword] != clauses[keyword]:
            return ReadOnlyVerdict(
                False,
                f"{clauses[keyword]} {keyword} keywords but {nodes[keyword]} {keyword} clauses "
                f"parsed; {_REFUSE_HINT}",
            )
    missing = needed - held
    if missing:
        return ReadOnlyVerdict(False, f"the parser dropped part of the statement; {_REFUSE_HINT}")
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


#: The last fingerprints (see sql_fingerprint).
_FINGERPRINTS = _Remembered[str](maxsize=1024)


def sql_fingerprint(sql: str) -> str:
    """Hex sha256 of :func:`normalize_sql`.

    A pure function of the text, so the last 1,024 are remembered by the SHA-256 of the text,
    as the read-only verdicts are: an application sends the same statement again and again, and
    the tokenizing is the costly part (`remembered_fingerprint` looks one up without it).
    """
    key = _key(sql)
    fingerprint = _FINGERPRINTS.get(key)
    if fingerprint is None:
        fingerprint = hashlib.sha256(normalize_sql(sql).encode("utf-8")).hexdigest()
        _FINGERPRINTS.put(key, fingerprint)
    return fingerprint


def remembered_fingerprint(sql: str) -> str | None:
    """The remembered `sql_fingerprint` of exactly this text, or None. A hash, never a parse."""
    return _FINGERPRINTS.get(_key(sql))
