"""T-SQL built-in functions that the translator rewrites itself (see _translate.py).

sqlglot merges or mistranslates these (GETDATE and SYSDATETIME both become CURRENT_TIMESTAMP,
LEN becomes LENGTH, ...), so _batch renames them ``TDSFN_NAME`` and this mixin turns each into a
call of our SQLite functions (_functions.py) or a bound session value, with its SQL Server type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlglot import exp

from . import _errors
from . import _typing as ty
from ._functions import unit_name
from ._sysfuncs import rewrite as rewrite_metadata
from ._types import DATETIME_TYPES, SqlType

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._scope import Context, Scope

    #: A ``_fn_<kind>`` handler: (call node, function name, its arguments, scope) -> its type.
    _Typer = Callable[[exp.Expression, str, list[exp.Expression], Scope], SqlType | None]

TEMPORAL = DATETIME_TYPES | {"date", "time", "datetimeoffset"}

#: Types of the session values bound as @__g_name.
GLOBAL_TYPES = {
    "__g_rowcount": ty.INT,
    "__g_identity": SqlType("numeric", precision=38, scale=0),
    "__g_scope_identity": SqlType("numeric", precision=38, scale=0),
    "__g_version": SqlType("nvarchar", length=300),
    "__g_spid": SqlType("smallint"),
    "__g_trancount": ty.INT,
    "__g_servername": SqlType("nvarchar", length=128),
    "__g_servicename": SqlType("nvarchar", length=128),
    "__g_language": SqlType("nvarchar", length=128),
    "__g_error": ty.INT,
    "__g_max_precision": SqlType("tinyint"),
    "__g_textsize": ty.INT,
    "__g_datefirst": SqlType("tinyint"),
    "__g_lock_timeout": ty.INT,
    "__g_nestlevel": ty.INT,
    "__g_options": ty.INT,
    "__g_db_name": SqlType("nvarchar", length=128),
    "__g_login": SqlType("nvarchar", length=128),
    "__g_user": SqlType("nvarchar", length=128),
    # control flow (_flow.py): ERROR_*() in a CATCH block, XACT_STATE(), HOST_NAME()
    "__g_error_number": ty.INT,
    "__g_error_message": SqlType("nvarchar", length=4000),
    "__g_error_severity": ty.INT,
    "__g_error_state": ty.INT,
    "__g_error_line": ty.INT,
    "__g_error_procedure": SqlType("nvarchar", length=128),
    "__g_xact_state": SqlType("smallint"),
    "__g_host_name": SqlType("nvarchar", length=128),
}


def anon(name: str, *args: exp.Expression) -> exp.Anonymous:
    return exp.Anonymous(this=name, expressions=list(args))


def text(value: str) -> exp.Literal:
    return exp.Literal.string(value)


class BuiltinsMixin:
    """Function handlers of `Translator` (``_fn_<kind>`` per entry of `FUNCTIONS`)."""

    ctx: Context

    def expr(self, node: exp.Expression, scope: Scope) -> SqlType | None:  # see Translator
        raise NotImplementedError

    # -- functions sqlglot would mangle (renamed TDSFN_X by _batch) ------------------------

    def _function(self, node: exp.Expression, scope: Scope) -> SqlType | None:
        # OBJECT_ID, SCHEMA_NAME, ... (_sysfuncs.py)
        metadata = rewrite_metadata(node, lambda arg: self.expr(arg, scope))
        if metadata is not None:
            return metadata
        assert isinstance(node, exp.Anonymous)
        name = str(node.this).upper()
        if name == "SQL_VARIANT_PROPERTY" and len(node.expressions) == 2:
            for arg in node.expressions:
                self.expr(arg, scope)
            node.replace(anon("tds_variant_property", *node.expressions))
            return SqlType("sql_variant")
        if not name.startswith("TDSFN_"):
            raise _errors.SqlError(
                195, f"'{name}' is not a recognized built-in function name.", severity=15
            )
        name = name[6:]
        args = list(node.expressions)
        spec = FUNCTIONS.get(name)
        if spec is None or not spec[0] <= len(args) <= spec[1]:
            raise _errors.SqlError(
                174,
                f"The {name.lower()} function requires {spec[0] if spec else 0} argument(s).",
                severity=15,
            )
        typer: _Typer = getattr(self, f"_fn_{spec[2]}")
        return typer(node, name, args, scope)

    def _fn_now(
        self, node: exp.Expression, name: str, args: list[exp.Expression], scope: Scope
    ) -> SqlType:
        kind = {"CURRENT_TIMESTAMP": "getdate"}.get(name, name.lower())
        node.replace(anon("tds_now", text(kind)))
        return {
            "getdate": SqlType("datetime"), "getutcdate": SqlType("datetime"),
            "sysdatetime": SqlType("datetime2", scale=7),
            "sysutcdatetime": SqlType("datetime2", scale=7),
        }.get(kind, SqlType("datetimeoffset", scale=7))  # fmt: skip

    def _fn_global(
        self, node: exp.Expression, name: str, args: list[exp.Expression], scope: Scope
    ) -> SqlType:
        key = {"SUSER_NAME": "__g_login", "SUSER_SNAME": "__g_login", "SYSTEM_USER": "__g_login",
               "USER_NAME": "__g_user", "CURRENT_USER": "__g_user", "SESSION_USER": "__g_user",
               "DB_NAME": "__g_db_name", "SCOPE_IDENTITY": "__g_scope_identity",
               "HOST_NAME": "__g_host_name", "XACT_STATE": "__g_xact_state",
               }.get(name) or f"__g_{name.lower()}"  # fmt: skip
        node.replace(exp.Parameter(this=exp.Var(this=key)))
        return GLOBAL_TYPES[key]

    def _fn_system(
        self, node: exp.Expression, name: str, args: list[exp.Expression], scope: Scope
    ) -> SqlType | None:
        """OBJECT_ID, DB_ID, DB_NAME(id), SCHEMA_NAME, SERVERPROPERTY (see _sysfuncs.py)."""
        from ._sysfuncs import result_type

        if name == "DB_NAME" and not args:
            return self._fn_global(node, name, args, scope)
        for arg in args:
            self.expr(arg, scope)
        args = list(node.expressions)
        node.replace(anon(f"tds_{name.lower()}", *args))
        return result_type(name, args)

    def _fn_newid(
        self, node: exp.Expression, name: str, args: list[exp.Expression], scope: Scope
    ) -> SqlType:
        node.replace(anon("tds_newid"))
        return SqlType("uniqueidentifier")

    def _fn_context(
        self, node: exp.Expression, name: str, args: list[exp.Expression], scope: Scope
    ) -> SqlType | None:
        key = args[0]
        self.expr(key, scope)
        key = node.expressions[0]
        node.replace(anon("tds_session_context", key))
        if isinstance(key, exp.Literal) and key.is_string:
            return self.ctx.context_types.get(key.this)
        return None

    def _fn_simple(
        self, node: exp.Expression, name: str, args: list[exp.Expression], scope: Scope
    ) -> SqlType | None:
        types = [self.expr(a, scope) for a in args]
        args = list(node.expressions)
        fn = {"LEN": "tds_len", "LEFT": "tds_left", "RIGHT": "tds_right",
              "CHARINDEX": "tds_charindex",
              "CONCAT": "tds_concat", "REPLICATE": "tds_replicate", "FLOOR": "tds_floor",
              "CEILING": "tds_ceiling", "ISNULL": "coalesce"}[name]  # fmt: skip
        if name == "ISNULL":
            new: exp.Expression = exp.Coalesce(this=args[0], expressions=[args[1]])
        else:
            new = anon(fn, *args)
        node.replace(new)
        if name in ("LEN", "CHARINDEX"):
            return ty.BIGINT if types[0] is not None and types[0].is_max else ty.INT
        if name in ("LEFT", "RIGHT", "REPLICATE"):
            base = types[0]
            if base is None or not ty.is_string(base):
                base = SqlType("varchar", length=8000)
            variable = {"char": "varchar", "nchar": "nvarchar"}.get(base.name, base.name)
            return SqlType(variable, length=base.length if name != "REPLICATE" else -1)
        if name == "CONCAT":
            wide = any(t is None or not ty.is_string(t) or t.name.startswith("n") for t in types)
            return SqlType("nvarchar", length=4000) if wide else SqlType("varchar", length=8000)
        if name == "ISNULL":
            return types[0] or types[1]
        return types[0]

    def _fn_datalength(
        self, node: exp.Expression, name: str, args: list[exp.Expression], scope: Scope
    ) -> SqlType:
        source = self.expr(args[0], scope)
        node.replace(
            anon("tds_datalength", node.expressions[0], text(str(source) if source else ""))
        )
        return ty.INT

    def _unit(self, node: exp.Expression) -> str:
        if isinstance(node, exp.Column | exp.Var) and not (
            isinstance(node, exp.Column) and node.table
        ):
            return unit_name(node.name)
        raise _errors.SqlError(
            1023, f"Invalid parameter 1 specified for datepart: {node.sql('tsql')}.", severity=15
        )

    def _fn_date(
        self, node: exp.Expression, name: str, args: list[exp.Expression], scope: Scope
    ) -> SqlType:
        if name in ("YEAR", "MONTH", "DAY", "EOMONTH"):
            unit, values = name.lower(), args
        else:
            unit, values = self._unit(args[0]), args[1:]
        types = [self.expr(v, scope) for v in values]
        values = list(node.expressions)[len(node.expressions) - len(values) :]
        names = [text(str(t) if t else "") for t in types]
        if name == "DATEADD":
            target = (
                types[1]
                if types[1] is not None and types[1].name in TEMPORAL
                else SqlType("datetime")
            )
            node.replace(
                anon(
                    "tds_dateadd",
                    text(unit),
                    values[0],
                    values[1],
                    text(str(target) if types[1] and types[1].name in TEMPORAL else "datetime"),
                )
            )
            return target
        if name == "DATEDIFF":
            node.replace(anon("tds_datediff", text(unit), values[0], names[0], values[1], names[1]))
            return ty.INT
        if name == "EOMONTH":
            node.replace(anon("tds_eomonth", values[0], names[0]))
            return SqlType("date")
        node.replace(anon("tds_datepart", text(unit), values[0], names[0]))
        return ty.INT


#: name -> (min args, max args, handler suffix)
FUNCTIONS = {
    "GETDATE": (0, 0, "now"), "CURRENT_TIMESTAMP": (0, 0, "now"), "GETUTCDATE": (0, 0, "now"),
    "SYSDATETIME": (0, 0, "now"), "SYSUTCDATETIME": (0, 0, "now"),
    "SYSDATETIMEOFFSET": (0, 0, "now"), "SUSER_NAME": (0, 0, "global"),
    "SUSER_SNAME": (0, 0, "global"), "SYSTEM_USER": (0, 0, "global"), "USER_NAME": (0, 0, "global"),
    "CURRENT_USER": (0, 0, "global"), "SESSION_USER": (0, 0, "global"), "DB_NAME": (0, 1, "system"),
    "SCOPE_IDENTITY": (0, 0, "global"), "NEWID": (0, 0, "newid"),
    "SESSION_CONTEXT": (1, 1, "context"), "LEN": (1, 1, "simple"), "LEFT": (2, 2, "simple"),
    "RIGHT": (2, 2, "simple"), "CHARINDEX": (2, 3, "simple"), "CONCAT": (2, 254, "simple"),
    "REPLICATE": (2, 2, "simple"), "FLOOR": (1, 1, "simple"), "CEILING": (1, 1, "simple"),
    "ISNULL": (2, 2, "simple"), "DATALENGTH": (1, 1, "datalength"), "DATEADD": (3, 3, "date"),
    "DATEDIFF": (3, 3, "date"), "DATEPART": (2, 2, "date"), "YEAR": (1, 1, "date"),
    "MONTH": (1, 1, "date"), "DAY": (1, 1, "date"), "EOMONTH": (1, 1, "date"),
    "ERROR_NUMBER": (0, 0, "global"), "ERROR_MESSAGE": (0, 0, "global"),
    "ERROR_SEVERITY": (0, 0, "global"), "ERROR_STATE": (0, 0, "global"),
    "ERROR_LINE": (0, 0, "global"), "ERROR_PROCEDURE": (0, 0, "global"),
    "XACT_STATE": (0, 0, "global"), "HOST_NAME": (0, 0, "global"),
    "OBJECT_ID": (1, 2, "system"), "DB_ID": (0, 1, "system"), "SCHEMA_NAME": (0, 1, "system"),
    "SERVERPROPERTY": (1, 1, "system"),
}  # fmt: skip
