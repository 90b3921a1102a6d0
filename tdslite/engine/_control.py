"""Statements that are not queries: SET, DECLARE, USE, EXEC, EXECUTE AS, REVERT, transactions
(BEGIN/COMMIT/ROLLBACK/SAVE TRANSACTION), and CREATE/ALTER VIEW or PROCEDURE (built by _objects.py
and _procedures.py).

These are recognised from their tokens (sqlglot parses several of them as opaque commands).
Session options clients send on connect (SET ANSI_NULLS ON, SET LANGUAGE, SET TEXTSIZE, ...) are
accepted and ignored; options that would change results in ways tdslite cannot honour are refused.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlglot import Token, TokenType, exp

from . import _errors, _objects, _procedures, _sysprocs
from ._batch import Statement, tokenize, word
from ._results import Info, ResultSet, RowCount, StatementFailed
from ._scalars import argument_name, evaluate, store, value_at
from ._state import SessionView, Variable
from ._translate import Translator, to_sqlite
from ._types import SqlType
from ._typing import sql_type_of

#: SET options accepted as no-ops (they do not change what tdslite computes).
NOOP_OPTIONS = frozenset(
    """ANSI_NULLS ANSI_PADDING ANSI_WARNINGS ANSI_NULL_DFLT_ON ANSI_NULL_DFLT_OFF ANSI_DEFAULTS
    ARITHABORT ARITHIGNORE CONCAT_NULL_YIELDS_NULL QUOTED_IDENTIFIER NUMERIC_ROUNDABORT
    CURSOR_CLOSE_ON_COMMIT LANGUAGE DATEFORMAT DATEFIRST TEXTSIZE LOCK_TIMEOUT
    DEADLOCK_PRIORITY STATISTICS QUERY_GOVERNOR_COST_LIMIT NO_BROWSETABLE TRANSACTION""".split()
)


def run(
    session: SessionView, statement: Statement, variables: dict[str, Variable]
) -> Iterator[ResultSet | RowCount | StatementFailed | Info]:
    """Run a statement recognised by its keyword (see the module docstring)."""
    tokens = tokenize(statement.text)
    words = [word(tokens, i) for i in range(len(tokens))]
    keyword = statement.keyword
    if keyword == "SET":
        _set_option(session, tokens, words)
    elif keyword == "USE":
        name = tokens[1].text if len(tokens) == 2 else ""
        session.use(name or statement.text[4:])
    elif keyword == "BEGIN" and words[1:2] in (["TRAN"], ["TRANSACTION"]):
        session.begin(_transaction_name(tokens, words))
    elif keyword == "COMMIT":
        _transaction_name(tokens, words)  # checked, then ignored (as SQL Server does)
        session.commit(all_levels=False)
    elif keyword == "ROLLBACK":
        session.rollback(_transaction_name(tokens, words))
    elif keyword == "SAVE" and words[1:2] in (["TRAN"], ["TRANSACTION"]):
        savepoint = _transaction_name(tokens, words)
        if savepoint is None:
            raise _errors.syntax_error(tokens[-1].text)
        session.save(savepoint)
    elif keyword == "REVERT" and len(words) == 1:
        session.revert()
    elif keyword in ("EXEC", "EXECUTE"):
        yield from _exec(session, tokens, words, variables)
    elif keyword in ("CREATE", "ALTER"):
        yield from _run_module(session, statement, variables)
    else:
        raise _errors.unsupported(" ".join(w for w in words[:2] if w) or keyword)
    return


def _transaction_name(tokens: list[Token], words: list[str]) -> str | None:
    """The name in ``BEGIN|COMMIT|ROLLBACK|SAVE [TRAN[SACTION]|WORK] [name]`` (None: no name)."""
    index = 2 if words[1:2] in (["TRAN"], ["TRANSACTION"]) else 1
    if words[1:2] == ["WORK"] and words[0] != "SAVE":
        if len(tokens) > 2:
            raise _errors.syntax_error(tokens[2].text)
        return None
    rest = tokens[index:]
    if not rest:
        return None
    if len(rest) == 1 and rest[0].token_type in (TokenType.VAR, TokenType.IDENTIFIER):
        if len(rest[0].text) > 32:
            raise _errors.SqlError(
                103,
                f"The identifier that starts with '{rest[0].text[:32]}' is too long. "
                "Maximum length is 32.",
                severity=15,
            )
        return rest[0].text
    if rest[0].token_type == TokenType.PARAMETER:
        raise _errors.unsupported("a transaction or savepoint name in a @variable")
    raise _errors.syntax_error(rest[-1].text if len(rest) == 1 else rest[1].text)


def _set_option(session: SessionView, tokens: list[Token], words: list[str]) -> None:
    from ._options import apply

    if apply(session.set_options, tokens, words):
        return
    options = [w for w in words[1:] if w not in ("ON", "OFF", ",", "")]
    value = words[-1] if words else ""
    first = options[0] if options else ""
    if first == "NOCOUNT":
        session.nocount = value == "ON"
        return
    if first == "XACT_ABORT" and len(options) == 1:
        session.xact_abort = value == "ON"
        return
    if first == "IDENTITY_INSERT":
        name = tokens[2].text
        session._catalog.refresh(session._conn_internal())
        info = session._catalog.table(name)
        if info is None:
            raise _errors.invalid_object(name)
        if not session.principal.may("INSERT", info.name):
            raise _errors.permission_denied("ALTER", info.name, session.database)
        if value == "ON":
            session._identity_insert.add(info.name.lower())
        else:
            session._identity_insert.discard(info.name.lower())
        return
    if first in ("IMPLICIT_TRANSACTIONS", "FMTONLY", "NOEXEC", "PARSEONLY", "SHOWPLAN_ALL"):
        if value == "OFF":
            return
        raise _errors.unsupported(f"SET {first} ON")
    if first == "ROWCOUNT":
        if tokens[-1].text == "0":
            return
        raise _errors.unsupported("SET ROWCOUNT n")
    if first == "TRANSACTION":  # ISOLATION LEVEL x (see _locks.py)
        session.isolation = " ".join(options[3:])
        return
    if first in NOOP_OPTIONS:
        return
    raise _errors.unsupported(f"SET {first or '?'}")


def _run_module(
    session: SessionView, statement: Statement, variables: dict[str, Variable]
) -> Iterator[ResultSet | RowCount | StatementFailed | Info]:
    """CREATE [OR ALTER] / ALTER VIEW or PROCEDURE."""
    kind, create, or_alter, name, index, tokens, catalog = _objects.module_header(statement)
    if catalog is not None and catalog.lower() != session.database.lower():
        raise _errors.SqlError(
            166,
            f"'{kind.replace('PROCEDURE', 'CREATE/ALTER PROCEDURE')}' does not allow specifying "
            "the database name as a prefix to the object name.",
            severity=15,
        )
    if kind == "PROCEDURE":
        _procedures.create(
            session, statement, name, index, tokens, create=create, or_alter=or_alter
        )
        return
    _objects.create_view(session, statement, name, index, tokens, create=create, or_alter=or_alter)
    return
    yield  # pragma: no cover  (a generator like the other statement runners)


def _arguments(
    session: SessionView, tokens: list[Token], start: int, variables: dict[str, Variable]
) -> tuple[list[tuple[object, SqlType | None]], dict[str, tuple[object, SqlType | None]]]:
    positional: list[tuple[object, SqlType | None]] = []
    named: dict[str, tuple[object, SqlType | None]] = {}
    index = start
    while index < len(tokens):
        name, index = argument_name(tokens, index)
        value, sql_type, index = value_at(session, tokens, index, variables)
        if word(tokens, index) in ("OUTPUT", "OUT"):
            index += 1
        if name is None:
            if named:
                raise _errors.SqlError(
                    119,
                    "Must pass parameter number 2 and subsequent parameters as '@name = value'.",
                    severity=15,
                )
            positional.append((value, sql_type))
        else:
            named[name] = (value, sql_type)
        if index < len(tokens):
            if tokens[index].token_type != TokenType.COMMA:
                raise _errors.syntax_error(tokens[index].text)
            index += 1
    return positional, named


def _exec(
    session: SessionView, tokens: list[Token], words: list[str], variables: dict[str, Variable]
) -> Iterator[ResultSet | RowCount | StatementFailed | Info]:
    if words[1:2] == ["AS"]:
        kind = words[2] if len(words) > 2 else ""
        if kind == "LOGIN" and len(tokens) >= 5:
            raise _errors.SqlError(
                15406,
                "Cannot execute as the server principal because the principal "
                f'"{tokens[4].text}" does not exist, this type of principal cannot be '
                "impersonated, or you do not have permission.",
            )
        if kind != "USER" or len(tokens) != 5 or tokens[3].token_type != TokenType.EQ:
            raise _errors.unsupported("EXECUTE AS " + kind)
        value, _, _ = value_at(session, tokens, 4, variables)
        if not isinstance(value, str):
            raise _errors.syntax_error(tokens[4].text)
        session.impersonate(value)
        return
    if _procedures.is_user_call(session, tokens):
        yield from _procedures.execute(session, tokens, variables)
        return
    index = 1
    if len(tokens) < 2:
        raise _errors.syntax_error(tokens[0].text)
    if tokens[index].token_type == TokenType.L_PAREN:
        raise _errors.unsupported("EXEC (dynamic SQL)")
    parts = [tokens[index].text]
    index += 1
    while index + 1 < len(tokens) and tokens[index].token_type == TokenType.DOT:
        parts.append(tokens[index + 1].text)
        index += 2
    procedure = parts[-1]
    if len(parts) > 1 and parts[-2].lower() not in ("sys", "dbo", ""):
        raise _errors.unknown_procedure(".".join(parts))
    positional, named = _arguments(session, tokens, index, variables)
    lowered = procedure.lower()
    if lowered == "sp_set_session_context":
        set_session_context(session, positional, named)
        return
    if lowered == "sp_reset_connection":
        session.reset()
        return
    system = _sysprocs.PROCEDURES.get(lowered)
    if system is None:
        raise _errors.unknown_procedure(procedure)
    yield from system(session, (positional, named))


def set_session_context(
    session: SessionView,
    positional: list[tuple[object, SqlType | None]],
    named: dict[str, tuple[object, SqlType | None]],
) -> None:
    names = ["key", "value", "read_only"]
    args = dict(zip(names, positional, strict=False))
    for name, argument in named.items():
        if name not in names:
            raise _errors.SqlError(
                8145, f"@{name} is not a parameter for procedure sp_set_session_context."
            )
        args[name] = argument
    key = args.get("key", (None, None))[0]
    if not isinstance(key, str) or key == "":
        raise _errors.SqlError(
            201,
            "Procedure or function 'sp_set_session_context' expects parameter '@key', which "
            "was not supplied.",
        )
    value, value_type = args.get("value", (None, None))
    read_only_value = args.get("read_only", (0, None))[0]
    store_context(session, key, value, value_type, bool(read_only_value))


def store_context(
    session: SessionView, key: str, value: object, value_type: SqlType | None, read_only: bool
) -> None:
    """sp_set_session_context with its arguments checked: the value keeps its type, except that
    a (max) string keeps its own length (up to 4000)."""
    sql_type = value_type or SqlType("int")
    if (
        sql_type.name in ("varchar", "nvarchar")
        and sql_type.length == -1
        and isinstance(value, str)
    ):
        sql_type = SqlType(sql_type.name, length=max(1, min(len(value), 4000)))
    session.set_context(key, value, sql_type, read_only)


def assign(session: SessionView, tree: exp.Set, variables: dict[str, Variable]) -> None:
    """SET @var = expression."""
    for item in tree.expressions:
        target = item.this
        if not isinstance(target, exp.EQ) or not isinstance(target.this, exp.Parameter):
            raise _errors.unsupported("SET " + item.sql("tsql")[:40])
        name = target.this.name.lower()
        if name not in variables:
            raise _errors.undeclared_variable("@" + target.this.name)
        value, _ = evaluate(session, target.expression, variables)
        declared = variables[name].type
        variables[name] = Variable(declared, store(declared, value))  # type: ignore[arg-type]
    session._rowcount = 1


def declare(session: SessionView, tree: exp.Declare, variables: dict[str, Variable]) -> None:
    """DECLARE @a type [= expression], ..."""
    for item in tree.expressions:
        kind = item.args.get("kind")
        if isinstance(kind, exp.Schema) and len(item.this) == 1 and not item.args.get("default"):
            _objects.declare_table(session, item.this[0].name, kind, variables)
            continue
        if not isinstance(kind, exp.DataType):
            raise _errors.unsupported("DECLARE of a table or cursor variable")
        declared = sql_type_of(kind)
        for parameter in item.this if isinstance(item.this, list) else [item.this]:
            name = parameter.name.lower()
            if name.startswith("__g_"):
                raise _errors.syntax_error("@" + parameter.name)  # reserved for @@globals
            if name in variables:
                raise _errors.redeclared_variable("@" + parameter.name)
            value = None
            if item.args.get("default"):
                value, _ = evaluate(session, item.args["default"], variables)
            variables[name] = Variable(declared, store(declared, value))  # type: ignore[arg-type]


def select_assign(
    session: SessionView, tree: exp.Select, tr: Translator, variables: dict[str, Variable]
) -> int:
    """SELECT @a = expr, @b = expr FROM ...: assigns the last row's values; returns the number of
    rows read (SQL Server reports it in the statement's DONE)."""
    targets = []
    for item in tree.expressions:
        name = item.this.name.lower()
        if name not in variables:
            raise _errors.undeclared_variable("@" + item.this.name)
        targets.append(name)
        item.replace(item.expression)
    columns = tr.query(tree, None)
    session.principal.check(verb="SELECT", reads=tr.tables, writes=set(), database=session.database)
    result = session._result(to_sqlite(tree), columns, variables)
    last = None
    count = 0
    for row in result.rows:
        last = row
        count += 1
    if last is not None:
        for name, value in zip(targets, last, strict=True):
            declared = variables[name].type
            variables[name] = Variable(declared, store(declared, value))  # type: ignore[arg-type]
    return count
