"""Values outside a query: the arguments of EXEC, RAISERROR and PRINT (a literal or an @variable),
a scalar expression evaluated with SQLite (SET, DECLARE, RETURN, parameter defaults), and a value
stored into a variable of its declared type.

Shared by the statement runners (_control.py, _procedures.py) and the block executor (_flow.py).
"""

from __future__ import annotations

from decimal import Decimal

from sqlglot import Token, TokenType, exp

from . import _errors
from ._batch import word
from ._state import SessionView, Variable
from ._translate import Translator, is_unknown, to_sqlite
from ._types import SqlType
from ._typing import literal_number
from ._values import convert, decode, encode


def value_at(
    session: SessionView, tokens: list[Token], index: int, variables: dict[str, Variable]
) -> tuple[object, SqlType | None, int]:
    """A literal or @variable argument at ``index``: (Python value, type, next index)."""
    token = tokens[index]
    negative = False
    if token.token_type == TokenType.DASH:
        negative, index = True, index + 1
        token = tokens[index]
    if token.token_type == TokenType.NATIONAL_STRING:
        return token.text, SqlType("nvarchar", length=max(1, len(token.text))), index + 1
    if token.token_type == TokenType.STRING:
        return token.text, SqlType("varchar", length=max(1, len(token.text))), index + 1
    if token.token_type == TokenType.NUMBER:
        sql_type = literal_number(("-" if negative else "") + token.text)
        number: object = (
            Decimal(token.text)
            if sql_type.name == "decimal"
            else (float(token.text) if sql_type.name == "float" else int(token.text))
        )
        return (-number if negative else number), sql_type, index + 1  # type: ignore[operator]
    if word(tokens, index) == "NULL":
        return None, None, index + 1
    if token.token_type == TokenType.PARAMETER and index + 1 < len(tokens):
        name = tokens[index + 1].text.lower()
        variable = variables.get(name)
        if variable is None:
            raise _errors.undeclared_variable("@" + tokens[index + 1].text)
        return decode(variable.type, variable.value), variable.type, index + 2
    raise _errors.syntax_error(token.text)


def argument_name(tokens: list[Token], index: int) -> tuple[str | None, int]:
    """``@name =`` at ``index`` of an EXEC's arguments: (lower-case name without "@", index of
    the value), or (None, index) for a positional argument."""
    if (
        tokens[index].token_type == TokenType.PARAMETER
        and index + 2 < len(tokens)
        and tokens[index + 2].token_type == TokenType.EQ
    ):
        return tokens[index + 1].text.lower(), index + 3
    return None, index


def evaluate(
    session: SessionView, expression: exp.Expression, variables: dict[str, Variable]
) -> tuple[object, SqlType | None]:
    """Evaluate a scalar expression with SQLite: (storage value, its type)."""
    select = exp.Select(expressions=[expression])
    session._catalog.refresh(session._conn_internal())
    tr = Translator(session._context_for(variables))
    columns = tr.query(select, None)
    session.principal.check(verb="SELECT", reads=tr.tables, writes=set(), database=session.database)
    result = session._result(to_sqlite(select), columns, variables)
    rows = list(result.rows)
    column_type = result.columns[0].type
    value = rows[0][0] if rows else None
    return value, None if is_unknown(column_type) else column_type


def store(variable_type: SqlType, value: object) -> object:
    """``value`` converted to a variable's type, in storage form (the value of a `Variable`)."""
    return encode(variable_type, convert(value, variable_type, source=None))
