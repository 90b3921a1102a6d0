"""Splitting a T-SQL batch into statements, with sqlglot's T-SQL tokenizer.

T-SQL does not need semicolons (``SELECT 1 SELECT 2`` is two statements) and sqlglot cannot parse
such a batch, so we split it ourselves.  Strategy: walk the tokens keeping the parenthesis depth; a
statement keyword at depth 0 starts a new statement unless it continues the current one (SELECT
after UNION or inside INSERT ... SELECT, the main statement after a CTE, the SET of an UPDATE).
Control flow is cut into pieces that _flow.py puts together: ``IF <condition>`` and ``WHILE
<condition>`` end where their statement begins, and ``BEGIN`` / ``BEGIN TRY`` / ``BEGIN CATCH`` /
``END [TRY|CATCH]`` / ``ELSE`` are pieces of their own (END and ELSE of a CASE expression are not).
Statements that carry a body we do not run (MERGE, CREATE PROCEDURE ...) swallow everything up to
the next semicolon, so they are refused as a whole and nothing in them can slip through as a
statement of its own.

Each statement's text is also rewritten at the token level (strings, [identifiers] and comments are
never touched) so that sqlglot keeps apart what it would otherwise merge: special functions
``F(`` become ``TDSFN_F(`` (GETDATE and SYSDATETIME both parse to CURRENT_TIMESTAMP otherwise) and
globals ``@@NAME`` become the bound parameter ``@__G_NAME``; an INSERT's column list loses the
qualifiers that name its target (``([dbo].[t].[a])`` is ``([a])``).  `parse_statement` then
parses one statement into a sqlglot tree, refusing what sqlglot would drop.
"""

from __future__ import annotations

import functools
import string
import unicodedata
from dataclasses import dataclass
from typing import ClassVar

import sqlglot
from sqlglot import Token, TokenType, exp
from sqlglot.dialects.tsql import TSQL
from sqlglot.errors import ParseError, SqlglotError, TokenError
from sqlglot.parsers.tsql import TSQLParser

from . import _errors

#: Keywords that begin a statement (the last line: reserved keywords that begin statements tdslite
#: does not run, such as cursor and text statements; they split the batch as in SQL Server).
STATEMENT_KEYWORDS = frozenset(
    """SELECT WITH INSERT UPDATE DELETE CREATE DROP ALTER DECLARE SET EXEC EXECUTE USE BEGIN
    COMMIT ROLLBACK SAVE REVERT TRUNCATE MERGE IF WHILE PRINT GRANT REVOKE DENY RETURN THROW
    RAISERROR GOTO BACKUP RESTORE DBCC KILL SHUTDOWN WAITFOR GO BREAK CONTINUE
    OPEN CLOSE FETCH DEALLOCATE CHECKPOINT READTEXT WRITETEXT UPDATETEXT SETUSER RECONFIGURE
    BULK END ELSE""".split()
)
#: Statements whose body is swallowed up to the next semicolon (all unsupported).
_SWALLOWING = frozenset({"MERGE", "GOTO"})
#: CREATE statements that do not carry a body (the rest are refused whole).
_CREATE_OK = frozenset({"TABLE", "INDEX", "UNIQUE", "CLUSTERED", "NONCLUSTERED"})
#: Functions sqlglot would translate or merge on its own; we handle them (see _functions.py).
SPECIAL_FUNCTIONS = frozenset(
    """GETDATE SYSDATETIME SYSUTCDATETIME SYSDATETIMEOFFSET GETUTCDATE SUSER_NAME SUSER_SNAME
    USER_NAME NEWID SCOPE_IDENTITY DB_NAME SESSION_CONTEXT LEN DATALENGTH DATEADD DATEDIFF
    DATEPART YEAR MONTH DAY EOMONTH LEFT RIGHT CHARINDEX ISNULL CONCAT REPLICATE FLOOR
    CEILING ERROR_NUMBER ERROR_MESSAGE ERROR_SEVERITY ERROR_STATE ERROR_LINE ERROR_PROCEDURE
    XACT_STATE OBJECT_ID DB_ID SCHEMA_NAME HOST_NAME SERVERPROPERTY""".split()
)
#: Niladic keywords that are really functions.
NILADIC = frozenset({"CURRENT_TIMESTAMP", "CURRENT_USER", "SYSTEM_USER", "SESSION_USER"})
#: Type names sqlglot would merge with others (REAL/FLOAT, NTEXT/TEXT, NUMERIC/DECIMAL).
_TYPE_RENAMES = {"REAL": "FLOAT(24)", "NTEXT": "NVARCHAR(MAX)", "NUMERIC": "TDS_NUMERIC"}
_LITERAL_TOKENS = frozenset(
    {TokenType.STRING, TokenType.NATIONAL_STRING, TokenType.IDENTIFIER, TokenType.NUMBER}
)


@dataclass(frozen=True)
class Statement:
    """One statement of a batch.

    Attributes:
        keyword: its first word, upper-case ("SELECT", "WITH", "EXEC", ...), or "(".
        text: the statement as written.
        sql: the text rewritten for sqlglot (special functions and @@globals renamed).
        words: upper-case keywords/words of the statement (not strings, identifiers or comments).
        line: 1-based line of the batch where it starts.
    """

    keyword: str
    text: str
    sql: str
    words: tuple[str, ...]
    line: int


def tokenize(sql: str) -> list[Token]:
    """T-SQL tokens of ``sql``, cut where SQL Server cuts them (see `_recomment` and `_relex`);
    an unclosed string or identifier is SQL Server's error 105, an unclosed comment 113."""
    return _relex(sql, _recomment(sql), 0)


def _recomment(sql: str) -> list[Token]:
    """sqlglot's tokens, re-cut where SQL Server ends a comment elsewhere.

    sqlglot counts the ``/`` of ``*/*`` inside a nested comment again as an opener (so
    ``/* /* */* */ DELETE ...`` stays a comment to it, while SQL Server ends the comment before
    DELETE), and reads ``{# ... #}`` as a template comment (``{`` is code to SQL Server). Where
    SQL Server's first character after white space and comments is not where sqlglot's next
    token starts, the rest of the batch is tokenized again from that character."""
    out: list[Token] = []
    tokens, index, base, position = _sqlglot_tokens(sql), 0, 0, 0
    while True:
        start = tokens[index].start + base if index < len(tokens) else len(sql)
        code = _skip_blank(sql, position)
        if code == start:
            if index >= len(tokens):
                return out
            token = tokens[index]
            out.append(_moved(token, base, 0) if base else token)
            position = token.end + base + 1
            index += 1  # an index, not tokens[1:]: a 500 KB batch has 100,000s of tokens
            continue
        if code == len(sql):
            return out  # the rest is a comment to SQL Server
        again = _sqlglot_tokens(sql[code:])
        if not again or again[0].start != 0:
            raise _errors.syntax_error(sql[code]).at_line(sql.count("\n", 0, code) + 1)
        line = sql.count("\n", 0, code)
        tokens, index = [_moved(t, 0, line) for t in again], 0
        base, position = code, code


def _skip_blank(sql: str, index: int) -> int:
    """Where SQL Server's next token starts: after white space, ``--`` comments (ended, as
    sqlglot ends them, at a line break) and nested ``/* */`` comments."""
    while index < len(sql):
        if sql[index].isspace():
            index += 1
        elif sql.startswith("--", index):
            ends = [i for i in (sql.find("\n", index), sql.find("\r", index)) if i >= 0]
            index = min(ends, default=len(sql))
        elif sql.startswith("/*", index):
            depth, index = 1, index + 2
            while depth:
                if index >= len(sql):
                    raise _errors.SqlError(
                        113, "Missing end comment mark '*/'.", severity=15
                    ).at_line(sql.count("\n") + 1)
                if sql.startswith("/*", index):
                    depth, index = depth + 1, index + 2
                elif sql.startswith("*/", index):
                    depth, index = depth - 1, index + 2
                else:
                    index += 1
        else:
            break
    return index


class _Tokenizer(TSQL.Tokenizer):
    """sqlglot's T-SQL tokenizer without "commands": sqlglot reads what follows a statement-initial
    PRINT, END, FETCH, GO ... as one string up to the next semicolon (``; END CATCH`` would lose
    CATCH), while SQL Server lexes it as usual."""

    COMMANDS: ClassVar[set[TokenType]] = set()


def _sqlglot_tokens(sql: str) -> list[Token]:
    try:
        return list(_Tokenizer().tokenize(sql))
    except TokenError:
        raise _errors.SqlError(
            105, "Unclosed quotation mark after the character string.", severity=15
        ) from None


def _name_char(c: str) -> bool:
    """Can ``c`` be part of an unquoted SQL Server name? (letters, decimal digits, _ @ # $)"""
    return c in "_@#$" or unicodedata.category(c)[0] == "L" or unicodedata.category(c) == "Nd"


def _currency(char: str, index: int) -> bool:
    """A currency sign starts a money literal ("$" only at the start: a$b is a name)."""
    return unicodedata.category(char) == "Sc" and (char != "$" or index == 0)


def _relex(sql: str, tokens: list[Token], offset: int, line: int = 0) -> list[Token]:
    """Where sqlglot's tokenizer and SQL Server's part ways, cut as SQL Server does.

    sqlglot reads ``0x1SHUTDOWN`` as one quoted name and ``$DELETE`` or ``a€DELETE`` as one word;
    SQL Server reads a binary literal (``0x`` and hex digits) or a money literal (a currency sign
    such as ``$``, ``€`` or ``£`` and digits), and then the rest as the next word, which may start
    a statement of its own. A character that is neither a name character nor a currency sign
    inside a word is a syntax error (102), as in SQL Server.
    """
    out: list[Token] = []
    for token in tokens:
        start, end = token.start + offset, token.end + offset
        source = sql[start : end + 1]
        cut = 0
        if token.token_type == TokenType.IDENTIFIER and source[:2].lower() == "0x":
            cut = 2
            while cut < len(source) and source[cut] in string.hexdigits:
                cut += 1
            piece_type = TokenType.HEX_STRING
        elif token.token_type == TokenType.VAR:
            money = next((i for i, c in enumerate(source) if _currency(c, i)), None)
            odd = next((c for c in source[:money] if not _name_char(c)), None)
            if odd is not None:
                raise _errors.syntax_error(odd).at_line(token.line)
            if money:  # a name, then a money literal
                cut, piece_type = money, TokenType.VAR
            elif money == 0:  # a money literal: the sign, then digits
                cut, piece_type = 1, TokenType.NUMBER
                while cut < len(source) and (source[cut].isdecimal() or source[cut] == "."):
                    cut += 1
        if not cut or cut >= len(source):
            out.append(_moved(token, offset, line) if offset else token)
            continue
        piece = sql[start : start + cut]
        out.append(Token(piece_type, piece, token.line + line, token.col, start, start + cut - 1))
        rest = _sqlglot_tokens(sql[start + cut : end + 1])
        out.extend(_relex(sql, rest, start + cut, token.line + line - 1))
    return out


def _moved(token: Token, offset: int, line: int) -> Token:
    return Token(
        token.token_type,
        token.text,
        token.line + line,
        token.col,
        token.start + offset,
        token.end + offset,
        token.comments,
    )


def word(tokens: list[Token], index: int) -> str:
    """The upper-case word at ``index`` or "" for strings, quoted names, variables, temporary
    names and names after a dot (so ``[delete]``, ``'delete'``, ``@delete``, ``#delete`` and
    ``t.delete`` are not keywords: SQL Server reads a word glued to ``@``/``#`` as one name)."""
    if index < 0 or index >= len(tokens):
        return ""
    token = tokens[index]
    if token.token_type in _LITERAL_TOKENS:
        return ""
    if index > 0 and tokens[index - 1].token_type in (
        TokenType.PARAMETER,
        TokenType.HASH,
        TokenType.DOT,
    ):
        if tokens[index - 1].end + 1 == token.start:
            return ""
    return token.text.upper()


class _Splitter:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.groups: list[list[int]] = []
        self.current: list[int] = []
        self.main: str | None = None  # WITH ... : the main statement's keyword after the CTEs
        self.select_seen = False  # INSERT ... SELECT / VALUES
        self.set_seen = False  # UPDATE ... SET
        self.cases = 0  # CASE expressions open (their WHEN/ELSE/END continue the statement)

    def flush(self) -> None:
        if self.current:
            self.groups.append(self.current)
        self.current = []
        self.main = None
        self.select_seen = self.set_seen = False
        self.cases = 0

    def continues(self, index: int, kw: str) -> bool:
        """Does keyword ``kw`` at depth 0 continue the current statement?"""
        first = word(self.tokens, self.current[0])
        previous = word(self.tokens, index - 1)
        if first in _SWALLOWING:
            return True
        if kw in ("END", "ELSE") and self.cases:
            return True  # the END / ELSE of a CASE expression
        if kw == "WITH" and first == "RAISERROR":
            return True  # RAISERROR (...) WITH NOWAIT | LOG | SETERROR
        if first == "CREATE" and word(self.tokens, self.current[0] + 1) not in _CREATE_OK:
            return True  # procedure/view/function/trigger bodies: refused whole
        if (
            kw == "WITH"
            and self.tokens[index + 1 : index + 2]
            and (
                self.tokens[index + 1].token_type == TokenType.L_PAREN
                or word(self.tokens, index + 1) in ("TIES", "CHECK", "ROLLUP", "CUBE")
            )
        ):
            return True
        if first == "WITH":
            if self.main is None and kw in ("SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"):
                self.main = kw
                return True
            first = self.main or first
        if kw == "IF" and first == "DROP" and index == self.current[0] + 2:
            return word(self.tokens, index + 1) == "EXISTS"  # DROP TABLE|VIEW|... IF EXISTS
        if kw == "FETCH" and previous in ("ROW", "ROWS"):
            return True  # ORDER BY ... OFFSET n ROWS FETCH NEXT m ROWS ONLY
        if kw == "SELECT":
            if previous in ("UNION", "ALL", "EXCEPT", "INTERSECT", "DISTINCT"):
                return True
            if first == "INSERT" and not self.select_seen:
                self.select_seen = True
                return True
        if kw == "SET" and first == "UPDATE" and not self.set_seen:
            self.set_seen = True
            return True
        if kw in ("EXEC", "EXECUTE") and first == "INSERT" and not self.select_seen:
            return True
        return False

    def split(self) -> list[list[int]]:
        depth = 0
        for index, token in enumerate(self.tokens):
            if token.token_type == TokenType.SEMICOLON and depth == 0:
                self.flush()
                continue
            kw = word(self.tokens, index)
            if kw == "CASE":
                self.cases += 1
            if depth == 0 and self.current and kw in STATEMENT_KEYWORDS:
                if not self.continues(index, kw):
                    self.flush()
            elif depth == 0 and kw == "VALUES" and self.current:
                self.select_seen = True
            if token.token_type == TokenType.L_PAREN:
                depth += 1
            elif token.token_type == TokenType.R_PAREN:
                depth = max(0, depth - 1)
            self.current.append(index)
            if kw == "END" and self.cases:
                self.cases -= 1
            elif kw in ("ELSE", "BREAK", "CONTINUE") and len(self.current) == 1:
                self.flush()  # a piece of its own: what follows is the next statement
        self.flush()
        return self.groups


def _insert_qualifiers(tokens: list[Token], indexes: list[int]) -> set[int]:
    """``INSERT [INTO] [dbo].[t] ([dbo].[t].[a], t.b)`` (Prisma writes its column lists so, and
    SQL Server accepts it): the tokens of the qualifiers that name the target table, with their
    dots, which sqlglot cannot read; they are dropped."""
    if word(tokens, indexes[0]) != "INSERT":
        return set()
    pos = 2 if word(tokens, indexes[1]) == "INTO" else 1
    start = next(
        (p for p in range(pos, len(indexes)) if tokens[indexes[p]].token_type == TokenType.L_PAREN),
        None,
    )
    if start is None or start == pos or (start - pos) % 2 == 0:
        return set()  # the parenthesis must follow the target's name: `a`, `a.b`, `a.b.c`
    if any(tokens[indexes[p]].token_type != TokenType.DOT for p in range(pos + 1, start, 2)):
        return set()
    target = tokens[indexes[start - 1]].text.lower()
    dropped: set[int] = set()
    item: list[int] = []
    for p in range(start + 1, len(indexes)):
        token = tokens[indexes[p]]
        if token.token_type not in (TokenType.COMMA, TokenType.R_PAREN):
            item.append(indexes[p])
            continue
        names, dots = item[0::2], item[1::2]
        if (
            len(names) > 1
            and all(tokens[i].token_type == TokenType.DOT for i in dots)
            and all(tokens[i].token_type in (TokenType.VAR, TokenType.IDENTIFIER) for i in names)
            and tokens[names[-2]].text.lower() == target
        ):
            dropped.update(item[:-1])
        item = []
        if token.token_type == TokenType.R_PAREN:
            break
    return dropped


def _rewrite(sql: str, tokens: list[Token], indexes: list[int]) -> str:
    """The statement's text with special functions and @@globals renamed, and INSERT column
    qualifiers dropped (see module doc)."""
    pieces: list[str] = []
    first = tokens[indexes[0]]
    position = first.start
    skip_until = -1
    qualifiers = _insert_qualifiers(tokens, indexes) if len(indexes) > 2 else set()
    for pos, index in enumerate(indexes):
        if index <= skip_until:
            continue
        token = tokens[index]
        kw = word(tokens, index)
        following = tokens[indexes[pos + 1]] if pos + 1 < len(indexes) else None
        replacement: str | None = None
        end = token.end
        if index in qualifiers:
            replacement = ""
        elif kw in _TYPE_RENAMES:
            replacement = _TYPE_RENAMES[kw]
        elif (
            kw in SPECIAL_FUNCTIONS
            and following is not None
            and following.token_type == TokenType.L_PAREN
        ):
            replacement = f"TDSFN_{kw}"
        elif kw in NILADIC and not (
            following is not None and following.token_type == TokenType.L_PAREN
        ):
            replacement = f"TDSFN_{kw}()"
        elif (
            token.token_type == TokenType.PARAMETER
            and pos + 2 < len(indexes)
            and tokens[indexes[pos + 1]].token_type == TokenType.PARAMETER
            and tokens[indexes[pos + 1]].start == token.end + 1
            and tokens[indexes[pos + 2]].start == token.end + 2
        ):
            name = tokens[indexes[pos + 2]].text.upper()
            replacement = f"@__G_{name}"
            end = tokens[indexes[pos + 2]].end
            skip_until = indexes[pos + 2]
        if replacement is not None:
            pieces.append(sql[position : token.start])
            pieces.append(replacement)
            position = end + 1
    last = tokens[indexes[-1]]
    pieces.append(sql[position : last.end + 1])
    return "".join(pieces)


def module_kind(words: list[str]) -> str | None:
    """``CREATE [OR ALTER] PROC|PROCEDURE|VIEW`` / ``ALTER PROC|VIEW`` at the start of ``words``
    (the statement's first words): "CREATE/ALTER PROCEDURE" or "CREATE VIEW" ... else None."""
    if words[:3] == ["CREATE", "OR", "ALTER"]:
        words = ["CREATE", *words[3:]]
    if words[:1] not in (["CREATE"], ["ALTER"]) or len(words) < 2:
        return None
    if words[1] in ("PROC", "PROCEDURE"):
        return "CREATE/ALTER PROCEDURE"
    if words[1] == "VIEW":
        return f"{words[0]} VIEW"
    return None


def split_batch(sql: str) -> list[Statement]:
    """Split a batch into statements (see the module docstring).

    Raises:
        SqlError: 105 for an unclosed quotation mark.
    """
    tokens = tokenize(sql)
    statements = []
    groups = _Splitter(tokens).split()
    for number, indexes in enumerate(groups):
        module = module_kind([word(tokens, i) for i in indexes[:4]])
        if module and number:
            raise _errors.SqlError(
                111, f"'{module}' must be the first statement in a query batch.", severity=15
            ).at_line(tokens[indexes[0]].line)
        if module:  # a procedure's or view's body runs to the end of the batch
            groups = [[i for g in groups for i in g]]
            break
    for indexes in groups:
        first, last = tokens[indexes[0]], tokens[indexes[-1]]
        keyword = "(" if first.token_type == TokenType.L_PAREN else word(tokens, indexes[0])
        # A quoted last token's end points at its closing quote/bracket already.
        text = sql[first.start : last.end + 1]
        statements.append(
            Statement(
                keyword=keyword,
                text=text,
                sql=_rewrite(sql, tokens, indexes),
                words=tuple(w for w in (word(tokens, i) for i in indexes) if w),
                line=first.line,
            )
        )
    return statements


class _TSQL(TSQL):
    """sqlglot's T-SQL dialect, reading ``DELETE FROM t OUTPUT ... WHERE ...`` and ``UPDATE |
    DELETE TOP (n) ...`` too.

    T-SQL puts the OUTPUT clause of a DELETE after its target (``DELETE [FROM] t OUTPUT
    deleted.* [FROM ...] WHERE ...``, the form Kysely writes); sqlglot only reads it before a
    FROM (``DELETE t OUTPUT ... FROM t``). ``TOP (n)`` right after UPDATE or DELETE (Kysely's
    ``top()``) becomes the statement's ``limit``.
    """

    class Parser(TSQLParser):
        def _parse_dml_top(self) -> exp.Expression | None:
            if not (self._curr and self._curr.token_type == TokenType.TOP):
                return None
            if not (self._next and self._next.token_type == TokenType.L_PAREN):
                return None  # T-SQL needs the parentheses here: left to fail as a syntax error
            self._advance(2)
            count = self._parse_term()
            self._match_r_paren()
            return exp.Limit(expression=count)

        def _parse_delete(self) -> exp.Delete:
            top = self._parse_dml_top()
            start = self._index
            node: exp.Delete | None = None
            if self._match(TokenType.FROM):
                target = self._parse_table_parts()
                if self._match(TokenType.RETURNING, advance=False):
                    returning = self._parse_returning()
                    node = self.expression(
                        exp.Delete(this=target, returning=returning, where=self._parse_where())
                    )
                else:
                    self._retreat(start)
            if node is None:
                node = super()._parse_delete()
            if top is not None:
                node.set("limit", top)
            return node

        def _parse_update(self) -> exp.Update:
            top = self._parse_dml_top()
            node = super()._parse_update()
            if top is not None:
                node.set("limit", top)
            return node


#: Keywords that must survive sqlglot's parse: if the regenerated statement has fewer of one,
#: sqlglot dropped part of the statement and we refuse it.
_SIGNIFICANT = frozenset(
    """SELECT INSERT UPDATE DELETE MERGE DROP CREATE ALTER TRUNCATE INTO EXEC EXECUTE FOR OPTION
    IF WHILE GRANT REVOKE DENY OUTPUT OPENROWSET OPENQUERY OPENDATASOURCE OPENXML NEXT BEGIN END
    WAITFOR SHUTDOWN KILL DBCC BACKUP RESTORE PIVOT UNPIVOT APPLY COLLATE TABLESAMPLE RETURN
    WITH UNION EXCEPT INTERSECT WHERE JOIN ON GROUP HAVING TOP OFFSET FETCH""".split()
)


@functools.lru_cache(maxsize=512)
def parse_statement(sql: str, words: tuple[str, ...]) -> exp.Expression:
    """Parse one statement (cached: callers copy the tree before changing it).

    Raises:
        SqlError: 102 syntax error; 40517 when sqlglot would drop part of the statement.
    """
    try:
        trees = [t for t in sqlglot.parse(sql, read=_TSQL) if t is not None]
    except ParseError as exc:
        near = (exc.errors[0].get("highlight") if exc.errors else None) or words[0]
        raise _errors.syntax_error(str(near)) from None
    except SqlglotError as exc:
        raise _errors.syntax_error(str(exc)[:60]) from None
    if len(trees) != 1:
        raise _errors.syntax_error(words[-1] if words else "")
    tree = trees[0]
    if isinstance(tree, exp.Command):
        raise _errors.unsupported(words[0] if words else "?")
    # Strategy: sqlglot silently drops what it does not understand (FOR JSON, the DELETE of
    # "IF 1 = 1 DELETE ..."); a significant keyword that the regenerated statement lacks means
    # part of the statement was lost, so we refuse it.
    tokens = tokenize(tree.sql("tsql"))
    regenerated = [word(tokens, i) for i in range(len(tokens))]
    if isinstance(tree, exp.Update | exp.Delete) and tree.args.get("limit"):
        regenerated.append("TOP")  # written back as LIMIT: UPDATE/DELETE TOP (n) (see _TSQL)
    for keyword in _SIGNIFICANT:
        if words.count(keyword) > regenerated.count(keyword):
            raise _errors.unsupported(keyword)
    assert isinstance(tree, exp.Expression)
    # T-SQL has TOP, not LIMIT (SQL Server reads `FROM t LIMIT 2` as an alias, then fails at 2)
    limits = [n for n in tree.find_all(exp.Limit) if not isinstance(n, exp.Fetch)]
    if len(limits) > words.count("TOP"):
        raise _errors.syntax_error("LIMIT")
    # `@1` is a T-SQL variable name like any other (tedious names Kysely's parameters so);
    # sqlglot reads it as a parameter holding the number 1: make it the name "1".
    for parameter in tree.find_all(exp.Parameter):
        if isinstance(parameter.this, exp.Literal) and not parameter.this.is_string:
            parameter.set("this", exp.Var(this=parameter.this.name))
    return tree
