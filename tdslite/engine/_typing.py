"""Result types of T-SQL expressions, following SQL Server's rules where tdslite can.

- column reference: the column's declared type; parameter/variable: its declared type
- literal: 8 -> int (bigint beyond int), 1.50 -> decimal(3,2), 1e3 -> float, 'ab' -> varchar(2),
  N'ab' -> nvarchar(2), 0x0A0B -> varbinary(2), NULL -> no type (int if nothing else is known)
- CAST/CONVERT/TRY_CAST: the target type
- + - * / %: the operand of higher data type precedence; decimal precision/scale as SQL Server
  computes them (capped at 38; an integer constant next to a decimal is decimal(digits,0));
  string + string is concatenation (nvarchar if either is)
- CASE, IIF, COALESCE: the highest-precedence branch; ISNULL: its first argument
- COUNT -> int, COUNT_BIG -> bigint; SUM: int family -> int (bigint stays bigint),
  decimal(p,s) -> decimal(38,s), money -> money, real/float -> float; AVG: int family -> int
  (truncated like SQL Server), decimal(p,s) -> decimal(38,max(s,6)); MIN/MAX: the argument's type
- functions: see FUNCTION_TYPES in _translate.py
- a declared type (CAST target, DECLARE, column definition): `sql_type_of` reads the parsed one
When nothing is known, the first row's value decides (int/bigint, float, nvarchar(max), ...).
"""

from __future__ import annotations

from sqlglot import exp

from . import _errors
from ._types import (
    DECIMAL_TYPES,
    FLOAT_TYPES,
    INTEGER_TYPES,
    MONEY_TYPES,
    STRING_TYPES,
    SqlType,
)
from ._values import python_type_of

PRECEDENCE = (
    "sql_variant xml datetimeoffset datetime2 datetime smalldatetime date time float real decimal "
    "numeric money smallmoney bigint int smallint tinyint bit uniqueidentifier nvarchar nchar "
    "varchar char varbinary binary"
).split()
_RANK = {name: i for i, name in enumerate(PRECEDENCE)}
NUMERIC = INTEGER_TYPES | DECIMAL_TYPES | MONEY_TYPES | FLOAT_TYPES
INT_PRECISION = {"bit": 1, "tinyint": 3, "smallint": 5, "int": 10, "bigint": 19}

INT = SqlType("int")
BIGINT = SqlType("bigint")
FLOAT = SqlType("float")
BIT = SqlType("bit")
NVARCHAR_MAX = SqlType("nvarchar", length=-1)


def higher(a: SqlType | None, b: SqlType | None) -> SqlType | None:
    """The type of higher precedence (None = unknown loses)."""
    if a is None:
        return b
    if b is None:
        return a
    if a.name in STRING_TYPES and b.name in STRING_TYPES:
        wide = a.name.startswith("n") or b.name.startswith("n")
        length = -1 if -1 in (a.length, b.length) else max(a.length or 1, b.length or 1)
        return SqlType("nvarchar" if wide else "varchar", length=length)
    if (a.name in DECIMAL_TYPES and b.name in INTEGER_TYPES) or (
        b.name in DECIMAL_TYPES and a.name in INTEGER_TYPES
    ):
        a, b = (
            SqlType("decimal", precision=INT_PRECISION[t.name], scale=0)
            if t.name in INTEGER_TYPES
            else t
            for t in (a, b)
        )
    if a.name in DECIMAL_TYPES and b.name in DECIMAL_TYPES:
        scale = max(a.scale or 0, b.scale or 0)
        digits = max((a.precision or 18) - (a.scale or 0), (b.precision or 18) - (b.scale or 0))
        return SqlType("decimal", precision=min(38, digits + scale), scale=scale)
    return a if _RANK.get(a.name, 99) <= _RANK.get(b.name, 99) else b


def concatenated(a: SqlType | None, b: SqlType | None) -> SqlType:
    """Type of string + string: the lengths add up (max stays max; capped like SQL Server)."""
    wide = any(t is None or t.name.startswith("n") for t in (a, b))
    lengths = [t.length if t is not None and t.length is not None else -1 for t in (a, b)]
    cap = 4000 if wide else 8000
    length = -1 if -1 in lengths or sum(lengths) > cap else sum(lengths)
    return SqlType("nvarchar" if wide else "varchar", length=length)


def _as_decimal(t: SqlType) -> tuple[int, int]:
    if t.name in DECIMAL_TYPES:
        return int(t.precision or 18), int(t.scale or 0)
    if t.name in MONEY_TYPES:
        return (19 if t.name == "money" else 10), 4
    return INT_PRECISION.get(t.name, 10), 0


def _cap(precision: int, scale: int, *, additive: bool = False) -> SqlType:
    """decimal(precision, scale) brought within 38 digits as SQL Server does: + and - keep the
    integral digits (the scale gives way); * and / keep at least 6 decimals when the integral
    part would need more than 32 digits."""
    if precision > 38:
        integral = precision - scale
        if additive:  # 38 - max(p1 - s1, p2 - s2): the carry digit is not reserved
            scale = min(scale, 39 - integral)
        else:
            scale = max(min(scale, 6), 38 - integral) if integral < 32 else min(scale, 6)
        precision = 38
    return SqlType("decimal", precision=precision, scale=max(0, scale))


#: result types computed exactly by ``tds_decimal_op`` (not by SQLite's integers/doubles)
EXACT_FRACTIONAL = DECIMAL_TYPES | MONEY_TYPES


def integer_constant(
    node: exp.Expression, mine: SqlType | None, other: SqlType | None
) -> SqlType | None:
    """The type of operand `node` in arithmetic with an operand of type `other`.

    Next to a decimal, an integer constant counts as decimal(digits, 0), the smallest type that
    holds it (SQL Server: ``1 / 3.0`` is numeric(8,6), and a numeric(9,6) divided by 3 has scale
    8); an int column or variable counts as decimal(10,0).
    """
    bare = node.this if isinstance(node, exp.Neg) else node
    if not (
        isinstance(bare, exp.Literal)
        and not bare.is_string
        and bare.this.isdigit()
        and other is not None
        and other.name in DECIMAL_TYPES
        and mine is not None
        and mine.name in INTEGER_TYPES
    ):
        return mine
    return SqlType("decimal", precision=max(1, len(bare.this.lstrip("0"))), scale=0)


def arithmetic(op: str, a: SqlType | None, b: SqlType | None) -> SqlType | None:
    """Result type of ``a op b`` for op in + - * / % (numbers only)."""
    if a is None or b is None:
        return higher(a, b)
    result = higher(a, b)
    assert result is not None
    if result.name in FLOAT_TYPES or result.name not in NUMERIC:
        return result
    if result.name in INTEGER_TYPES:
        return INT if result.name == "bit" else result
    if result.name in MONEY_TYPES and (a.name in MONEY_TYPES or b.name in MONEY_TYPES):
        if a.name not in DECIMAL_TYPES and b.name not in DECIMAL_TYPES:
            return SqlType("money")
    (p1, s1), (p2, s2) = _as_decimal(a), _as_decimal(b)
    if op in "+-":
        scale = max(s1, s2)
        return _cap(max(p1 - s1, p2 - s2) + scale + 1, scale, additive=True)
    if op == "*":
        return _cap(p1 + p2 + 1, s1 + s2)
    if op == "/":
        scale = max(6, s1 + p2 + 1)
        return _cap(p1 - s1 + s2 + scale, scale)
    return _cap(min(p1 - s1, p2 - s2) + max(s1, s2), max(s1, s2))


def aggregate(name: str, arg: SqlType | None) -> SqlType | None:
    """Result type of an aggregate over ``arg``."""
    if name == "count":
        return INT
    if name == "count_big":
        return BIGINT
    if name in ("min", "max") or arg is None:
        return arg
    if arg.name in ("tinyint", "smallint", "int", "bit"):
        return INT
    if arg.name == "bigint":
        return BIGINT
    if arg.name in DECIMAL_TYPES:
        scale = int(arg.scale or 0)
        return SqlType("decimal", precision=38, scale=max(scale, 6) if name == "avg" else scale)
    if arg.name in MONEY_TYPES:
        return SqlType("money")
    if arg.name in FLOAT_TYPES:
        return FLOAT
    return arg


def is_string(t: SqlType | None) -> bool:
    return t is not None and t.name in STRING_TYPES


def is_numeric(t: SqlType | None) -> bool:
    return t is not None and t.name in NUMERIC


def literal_number(text: str) -> SqlType:
    """The type SQL Server gives a numeric literal."""
    lowered = text.lower()
    if "e" in lowered:
        return FLOAT
    if "." in text:
        integral, _, fraction = text.lstrip("+-").partition(".")
        digits = len(integral.lstrip("0")) + len(fraction)
        return SqlType("decimal", precision=max(digits, len(fraction), 1), scale=len(fraction))
    value = int(text)
    if -(2**31) <= value < 2**31:
        return INT
    return SqlType("decimal", precision=max(1, len(text.lstrip("+-"))), scale=0)


_DTYPE_NAMES = {
    "BIT": "bit", "UTINYINT": "tinyint", "TINYINT": "tinyint", "SMALLINT": "smallint",
    "INT": "int", "BIGINT": "bigint", "DECIMAL": "decimal", "MONEY": "money",
    "SMALLMONEY": "smallmoney", "FLOAT": "float", "DOUBLE": "float", "CHAR": "char",
    "VARCHAR": "varchar", "NCHAR": "nchar", "NVARCHAR": "nvarchar", "BINARY": "binary",
    "VARBINARY": "varbinary", "DATE": "date", "TIME": "time", "DATETIME": "datetime",
    "SMALLDATETIME": "smalldatetime", "DATETIME2": "datetime2", "TIMESTAMPTZ": "datetimeoffset",
    "UUID": "uniqueidentifier", "TEXT": "varchar(max)", "IMAGE": "varbinary(max)",
    "VARIANT": "sql_variant", "XML": "xml",
}  # fmt: skip


def sql_type_of(node: exp.DataType) -> SqlType:
    """SqlType of a parsed DataType (REAL and NTEXT arrive renamed by _batch)."""
    dtype = node.this.name if hasattr(node.this, "name") else str(node.this)
    params = [p.sql("tsql") for p in node.expressions]
    name = _DTYPE_NAMES.get(dtype)
    if dtype == "USERDEFINED":
        kind = str(node.args.get("kind") or node.sql("tsql")).lower()
        name = {"sysname": "sysname", "tds_numeric": "numeric"}.get(kind)
    if name is None:
        raise _errors.SqlError(
            2715, f"Column, parameter, or variable: cannot find data type {node.sql('tsql')}."
        )
    spelled = f"{name}({', '.join(params)})" if params else name
    try:
        return SqlType.parse(spelled, in_cast=True)
    except ValueError as exc:
        raise _errors.SqlError(2715, f"Data type {spelled} is not valid: {exc}.") from None


def guess_type(value: object) -> SqlType:
    """The type of a computed value whose type the translator could not infer (from a row)."""
    if value is None:
        return SqlType("int")
    if isinstance(value, str):
        return SqlType("nvarchar", length=-1)
    return python_type_of(value)
