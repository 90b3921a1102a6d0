"""Stored procedures: CREATE/ALTER PROCEDURE (also CREATE OR ALTER, ``#temporary``), EXEC by
name with positional, named, DEFAULT and OUTPUT arguments, ``EXEC @rc = p``, RETURN n.

A procedure is its registry row (see `_objects`): the parameter list and the body text. EXEC
binds the arguments to fresh variables, runs the body through `Session.run_body` (the session's
one entry point for statement lists) under ownership chaining (`_perms.ChainedPrincipal`: the
body's statements on dbo tables need no permission of the caller's beyond EXECUTE; not for
``#procedures``, which belong to their session), then copies
OUTPUT parameters back to the caller's variables and records the return status for the wire
layer (RETURNSTATUS / RETURNVALUE tokens of an RPC).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import Token, TokenType
from sqlglot.errors import SqlglotError

from . import _errors
from ._batch import Statement, split_batch, tokenize, word
from ._objects import drop_table_variables, lookup, record, schema_exists, split_name
from ._perms import ChainedPrincipal
from ._results import Info, ResultSet, RowCount, StatementFailed
from ._scalars import argument_name, evaluate, store, value_at
from ._state import ObjectRow, SessionView, Variable
from ._types import SqlType
from ._values import decode

#: SQL Server's limit of nested procedure calls (error 217).
MAX_NESTING = 32
_ATTRIBUTES = ("OUTPUT", "OUT", "READONLY", "VARYING")


@dataclass(frozen=True)
class _Argument:
    name: str | None  # "@a" when passed as @a = ..., else positional
    value: object
    type: SqlType | None
    variable: str | None  # the caller's variable (lower-case, no "@") when passed as @v
    output: bool
    default: bool  # the DEFAULT keyword


# -- CREATE / ALTER ----------------------------------------------------------------------------


def create(
    session: SessionView,
    statement: Statement,
    name: str,
    index: int,
    tokens: list[Token],
    *,
    create: bool,
    or_alter: bool,
) -> None:
    """CREATE [OR ALTER] / ALTER PROCEDURE name [params] AS body."""
    from ._objects import _as_create, _invalid_schema, exists, forget

    if name.startswith("##"):
        raise _errors.unsupported("global temporary procedures (##p)")
    temporary = name.startswith("#")
    if not temporary and not session.principal.may_ddl:
        raise _errors.ddl_denied("CREATE PROCEDURE", session.database)
    schema, short = split_name(name)
    if not temporary and not schema_exists(session, schema):
        raise _invalid_schema(schema)
    params, body_start = _parameters(tokens, index, statement.text)
    body = _unwrap(statement.text[body_start:].strip())
    for piece in split_batch(body):
        session._prepare(piece)  # syntax errors and unsupported statements now, as SQL Server
    existing = lookup(session, name, "PROCEDURE")
    if not create and existing is None:
        raise _errors.invalid_object(name)
    if existing is not None and create and not or_alter:
        raise _errors.already_exists(short)
    if existing is None and not temporary and exists(session, name):
        raise _errors.already_exists(short)
    definition = statement.text if create and not or_alter else _as_create(statement.text)
    row = ObjectRow(schema, short, "PROCEDURE", definition, tuple(params), body)
    if temporary:
        session.objects.temp_procedures[name.lower()] = row
        return
    from ._objects import ddl

    with ddl(session, "CREATE PROCEDURE"):
        if existing is not None:
            forget(session, existing)
        record(session, row)


def _parameters(tokens: list[Token], index: int, text: str) -> tuple[list[dict[str, Any]], int]:
    """The parameter list from ``tokens[index]`` to AS: its dicts and where the body starts."""
    params: list[dict[str, Any]] = []
    i = index
    if i < len(tokens) and tokens[i].token_type == TokenType.L_PAREN:
        i += 1
    while i < len(tokens) and word(tokens, i) not in ("AS", "WITH"):
        token = tokens[i]
        if token.token_type == TokenType.R_PAREN or token.token_type == TokenType.COMMA:
            i += 1
            continue
        if token.token_type != TokenType.PARAMETER or i + 1 >= len(tokens):
            raise _errors.syntax_error(token.text)
        pname = "@" + tokens[i + 1].text
        if pname.lower() in {p["name"].lower() for p in params}:
            raise _errors.SqlError(
                134, f"The variable name '{pname}' has already been declared.", severity=15
            )
        i += 2
        end = _until(tokens, i, stop_words=("=",))
        if end == i:
            raise _errors.syntax_error(tokens[i].text if i < len(tokens) else pname)
        type_text = text[tokens[i].start : tokens[end - 1].end + 1]
        try:
            SqlType.parse(type_text)
        except ValueError:
            raise _errors.SqlError(
                2715,
                f"Column, parameter, or variable #{len(params) + 1}: Cannot find data type "
                f"{type_text}.",
            ) from None
        i = end
        default = None
        if i < len(tokens) and tokens[i].token_type == TokenType.EQ:
            end = _until(tokens, i + 1, stop_words=())
            if end == i + 1:
                raise _errors.syntax_error("=")
            default = text[tokens[i + 1].start : tokens[end - 1].end + 1]
            i = end
        output = False
        while word(tokens, i) in _ATTRIBUTES:
            if word(tokens, i) == "READONLY":
                raise _errors.unsupported("table-valued parameters (READONLY)")
            output = output or word(tokens, i) in ("OUTPUT", "OUT")
            i += 1
        params.append({"name": pname, "type": type_text, "default": default, "output": output})
    if word(tokens, i) == "WITH":
        raise _errors.unsupported("procedure options (WITH ...)")
    if word(tokens, i) != "AS" or i + 1 >= len(tokens):
        raise _errors.syntax_error(tokens[-1].text if tokens else "")
    return params, tokens[i].end + 1


def _until(tokens: list[Token], i: int, *, stop_words: tuple[str, ...]) -> int:
    """Index of the first token at depth 0 that ends a parameter's type or default."""
    depth = 0
    while i < len(tokens):
        token = tokens[i]
        if token.token_type == TokenType.L_PAREN:
            depth += 1
        elif token.token_type == TokenType.R_PAREN:
            if depth == 0:
                return i
            depth -= 1
        elif depth == 0 and (
            token.token_type == TokenType.COMMA
            or token.text in stop_words
            or word(tokens, i) in (*_ATTRIBUTES, "AS", "WITH")
        ):
            return i
        i += 1
    return i


def _unwrap(body: str) -> str:
    """A body that is one ``BEGIN ... END`` block -> the statements inside it."""
    tokens = tokenize(body)
    if word(tokens, 0) != "BEGIN" or word(tokens, 1) in ("TRAN", "TRANSACTION", "DISTRIBUTED"):
        return body
    depth = 0
    for i in range(len(tokens)):
        w = word(tokens, i)
        opens = w == "CASE" or (
            w == "BEGIN" and word(tokens, i + 1) not in ("TRAN", "TRANSACTION", "DISTRIBUTED")
        )
        if opens:
            depth += 1
        elif w == "END":
            depth -= 1
            if depth == 0:
                if i != len(tokens) - 1 and not (
                    i == len(tokens) - 2 and tokens[-1].token_type == TokenType.SEMICOLON
                ):
                    return body  # several blocks: left to the block executor
                return body[tokens[0].end + 1 : tokens[i].start].strip()
    return body


# -- EXEC ------------------------------------------------------------------------------------


def _name_at(tokens: list[Token], i: int) -> tuple[str, int]:
    """A procedure name at ``tokens[i]``: T-SQL spelling (``p``, ``sales.p``, ``#p``)."""
    if i < len(tokens) and tokens[i].token_type == TokenType.HASH:
        if i + 1 < len(tokens) and tokens[i + 1].token_type == TokenType.HASH:
            raise _errors.unsupported("global temporary procedures (##p)")
        return "#" + tokens[i + 1].text, i + 2
    parts = [tokens[i].text] if i < len(tokens) else [""]
    i += 1
    while i + 1 < len(tokens) and tokens[i].token_type == TokenType.DOT:
        parts.append(tokens[i + 1].text)
        i += 2
    if len(parts) == 3:
        parts = parts[1:]
    if len(parts) == 2 and parts[0].lower() in ("dbo", ""):
        parts = parts[1:]
    return ".".join(parts), i


def is_user_call(session: SessionView, tokens: list[Token]) -> bool:
    """Does this EXEC call a procedure of ours (or assign a return status: EXEC @rc = p)?"""
    if len(tokens) < 2:
        return False
    if tokens[1].token_type == TokenType.PARAMETER:
        return len(tokens) > 3 and tokens[3].token_type == TokenType.EQ
    if tokens[1].token_type == TokenType.L_PAREN:
        return False
    name, _ = _name_at(tokens, 1)
    return name.startswith("#") or lookup(session, name, "PROCEDURE") is not None


def execute(
    session: SessionView, tokens: list[Token], variables: dict[str, Variable]
) -> Iterator[ResultSet | RowCount | StatementFailed | Info]:
    """EXEC [@rc =] name [args]: run the procedure, then set OUTPUT arguments and @rc."""

    i = 1
    status_variable = None
    if tokens[1].token_type == TokenType.PARAMETER:
        status_variable = tokens[2].text.lower()
        if status_variable not in variables:
            raise _errors.undeclared_variable("@" + tokens[2].text)
        i = 4
    name, i = _name_at(tokens, i)
    row = lookup(session, name, "PROCEDURE")
    if row is None:
        raise _errors.unknown_procedure(name)
    if not session.principal.may_execute(name):
        raise _errors.permission_denied("EXECUTE", row.name, session.database)
    arguments = _arguments(session, tokens, i, variables)
    local = _bind(session, row, arguments)
    objects = session.objects
    if objects.depth >= MAX_NESTING:
        raise _errors.SqlError(
            217,
            "Maximum stored procedure, function, trigger, or view nesting level exceeded "
            f"(limit {MAX_NESTING}).",
        )
    stack = session._stack
    depth = len(stack)
    caller = stack[-1]
    if not name.startswith("#"):
        # Ownership chaining for dbo's procedures only: a #procedure belongs to the session
        # that made it, so its statements run with the caller's own permissions.
        stack.append(ChainedPrincipal(caller.name, caller.role, dict(caller.grants)))
        session._set_principal(stack[-1])
    objects.depth += 1
    options = session.nocount, session.xact_abort  # SET inside a procedure is its own
    try:
        yield from session.run_body(row.body, local, procedure=row.name)
    finally:
        session.nocount, session.xact_abort = options
        objects.depth -= 1
        del stack[depth:]
        session._set_principal(stack[-1])
        drop_table_variables(session, local)
    status = session.return_status
    outputs: dict[str, tuple[SqlType, object]] = {}
    declared = {p["name"].lower(): p for p in row.parameters}
    for position, argument in enumerate(arguments):
        if not argument.output or argument.variable is None:
            continue
        pname = (argument.name or row.parameters[position]["name"]).lower()
        if not declared[pname]["output"]:
            continue
        source = local[pname[1:]]
        target = variables[argument.variable]
        value = decode(source.type, source.value)
        stored = store(target.type, value)
        variables[argument.variable] = Variable(target.type, stored)  # type: ignore[arg-type]
        outputs[argument.variable] = (target.type, decode(target.type, stored))  # type: ignore[arg-type]
    if status_variable is not None:
        target = variables[status_variable]
        variables[status_variable] = Variable(target.type, store(target.type, status))  # type: ignore[arg-type]
    objects.outcome = (status, outputs)


def _arguments(
    session: SessionView, tokens: list[Token], i: int, variables: dict[str, Variable]
) -> list[_Argument]:
    out: list[_Argument] = []
    while i < len(tokens):
        bare, i = argument_name(tokens, i)
        name = None if bare is None else "@" + bare
        if i >= len(tokens):
            raise _errors.syntax_error(tokens[-1].text)
        variable = None
        default = word(tokens, i) == "DEFAULT"
        if default:
            value: object = None
            sql_type: SqlType | None = None
            i += 1
        else:
            if tokens[i].token_type == TokenType.PARAMETER and i + 1 < len(tokens):
                variable = tokens[i + 1].text.lower()
            value, sql_type, i = value_at(session, tokens, i, variables)
        output = word(tokens, i) in ("OUTPUT", "OUT")
        if output:
            i += 1
        if name is None and any(a.name for a in out):
            raise _errors.SqlError(
                119,
                f"Must pass parameter number {len(out) + 1} and subsequent parameters as "
                "'@name = value'. After the form '@name = value' has been used, all subsequent "
                "parameters must be passed in the form '@name = value'.",
                severity=15,
            )
        out.append(_Argument(name, value, sql_type, variable, output, default))
        if i < len(tokens):
            if tokens[i].token_type != TokenType.COMMA:
                raise _errors.syntax_error(tokens[i].text)
            i += 1
    return out


def _bind(session: SessionView, row: ObjectRow, arguments: list[_Argument]) -> dict[str, Variable]:
    """The procedure's parameters as variables, from the arguments and the defaults."""

    params = row.parameters
    by_name = {p["name"].lower(): p for p in params}
    given: dict[str, _Argument] = {}
    for position, passed in enumerate(arguments):
        if passed.name is None:
            if position >= len(params):
                raise _errors.SqlError(
                    8144, f"Procedure or function {row.name} has too many arguments specified."
                )
            key = params[position]["name"].lower()
        else:
            key = passed.name.lower()
            if key not in by_name:
                raise _errors.SqlError(
                    8145, f"{passed.name} is not a parameter for procedure {row.name}."
                )
        if passed.output and not by_name[key]["output"]:
            raise _errors.SqlError(
                8162,
                f'The formal parameter "{by_name[key]["name"]}" was not declared as an OUTPUT '
                "parameter, but the actual parameter passed in requested output.",
            )
        given[key] = passed
    local: dict[str, Variable] = {}
    for param in params:
        key = param["name"].lower()
        sql_type = SqlType.parse(param["type"])
        argument = given.get(key)
        if argument is None or argument.default:
            if param["default"] is None:
                if argument is None and not param["output"]:
                    raise _errors.SqlError(
                        201,
                        f"Procedure or function '{row.name}' expects parameter "
                        f"'{param['name']}', which was not supplied.",
                    )
                value: object = None
            else:
                value, _, _ = value_at(session, tokenize(param["default"]), 0, {})
        else:
            value = argument.value
        local[key[1:]] = Variable(sql_type, store(sql_type, value))  # type: ignore[arg-type]
    return local


def return_status(
    session: SessionView, statement: Statement, variables: dict[str, Variable]
) -> int:
    """The status of ``RETURN [expression]`` (0 without one); _flow.py ends the body."""
    rest = statement.sql.strip()[len("RETURN") :].strip().rstrip(";")
    if not rest:
        return 0
    try:
        tree = sqlglot.parse_one("SELECT " + rest, read="tsql")
    except SqlglotError:
        raise _errors.syntax_error(rest[:20]) from None
    value, sql_type = evaluate(session, tree.expressions[0], variables)
    python = decode(sql_type, value) if sql_type is not None else value  # type: ignore[arg-type]
    try:
        return 0 if python is None else int(python)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise _errors.conversion_failed("varchar", str(python)[:30], "int") from None
