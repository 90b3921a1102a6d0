"""T-SQL statement trees (sqlglot, read="tsql") -> SQLite SQL, with SQL Server result types.

Strategy: walk the tree ourselves and accept only node types listed in `Translator._handlers`
(and only the arguments we understand on statements, joins and tables); anything else raises
SqlError 40517 naming the construct, so nothing is ever dropped silently.  While walking we infer
each expression's SQL Server type (_typing.py) and rewrite what SQLite lacks into calls of our own
functions (_functions.py): typed CAST/CONVERT, division (divide-by-zero error), LEFT/RIGHT/LEN,
date functions, NEWID, GETDATE & co., SESSION_CONTEXT; session values (@@ROWCOUNT, SCOPE_IDENTITY,
DB_NAME, USER_NAME, ...) become bound parameters ``@__g_name``.  Finally sqlglot writes SQLite SQL
with unsupported_level=RAISE.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from sqlglot import exp
from sqlglot.errors import ErrorLevel, SqlglotError

from . import _errors, _tvp
from . import _typing as ty
from ._builtins import GLOBAL_TYPES, TEMPORAL, BuiltinsMixin, anon, text
from ._catalog import TableInfo, is_internal
from ._scope import Context, Scope
from ._sysviews import substitute, view_name
from ._types import Column, SqlType
from ._values import decimal_storage, utf16_len

_TABLE_HINTS = {"NOLOCK", "READUNCOMMITTED", "ROWLOCK", "UPDLOCK", "HOLDLOCK", "READPAST",
                "NOWAIT", "PAGLOCK", "TABLOCK", "TABLOCKX", "XLOCK", "READCOMMITTED",
                "SERIALIZABLE",
                "REPEATABLEREAD"}  # fmt: skip
_STYLES = {0, 20, 21, 23, 100, 120, 121, 126, 127}


def check_args(node: exp.Expression, allowed: set[str], what: str) -> None:
    """Refuse a node that carries arguments we do not translate (fail closed)."""
    for key, value in node.args.items():
        if value and key not in allowed:
            raise _errors.unsupported(f"{what} {key.rstrip('_').upper()}")


class Translator(BuiltinsMixin):
    """Rewrites one statement tree in place; see the module docstring."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.tables: set[str] = set()  # catalog tables the statement reads
        self._handlers: dict[
            type[exp.Expression], Callable[[exp.Expression, Scope], SqlType | None]
        ]
        self._handlers = {
            exp.Column: self._column, exp.Literal: self._literal, exp.National: self._national,
            exp.HexString: self._hex, exp.Null: lambda n, s: None, exp.Parameter: self._parameter,
            exp.Paren: self._first, exp.Neg: self._neg, exp.Add: self._arith,
            exp.Sub: self._arith,
            exp.Mul: self._arith, exp.Div: self._arith, exp.Mod: self._arith,
            exp.EQ: self._compare, exp.NEQ: self._compare, exp.GT: self._compare,
            exp.GTE: self._compare, exp.LT: self._compare, exp.LTE: self._compare,
            exp.And: self._logic, exp.Or: self._logic, exp.Not: self._logic, exp.Is: self._logic,
            exp.Like: self._logic, exp.In: self._in, exp.Between: self._between,
            exp.Exists: self._exists, exp.Subquery: self._scalar_subquery, exp.Case: self._case,
            exp.If: self._branches, exp.Coalesce: self._branches, exp.Cast: self._cast,
            exp.TryCast: self._cast, exp.Convert: self._convert, exp.Count: self._aggregate,
            exp.Sum: self._aggregate, exp.Avg: self._aggregate, exp.Min: self._aggregate,
            exp.Max: self._aggregate, exp.GroupConcat: self._string_agg, exp.Window: self._window,
            exp.RowNumber: lambda n, s: ty.BIGINT, exp.Upper: self._first, exp.Lower: self._first,
            exp.Trim: self._trim, exp.Substring: self._substring, exp.Replace: self._first,
            exp.Abs: self._first, exp.Round: self._first, exp.Anonymous: self._function,
            exp.Ordered: self._first, exp.Distinct: self._distinct,
            exp.ObjectId: self._function, exp.CurrentSchema: self._function,
        }  # fmt: skip
        kinds: tuple[type[exp.Expression], ...]
        for kinds, handler in (
            ((exp.Sqrt, exp.Exp, exp.Ln, exp.Pi), self._float_function),
            ((exp.Nullif, exp.Pow, exp.Sign, exp.BitwiseNot), self._first),
            ((exp.BitwiseAnd, exp.BitwiseOr), self._branches),
        ):
            for kind in kinds:
                self._handlers[kind] = handler
        for name in ("Rank", "DenseRank"):
            if hasattr(exp, name):
                self._handlers[getattr(exp, name)] = lambda n, s: ty.BIGINT

    # -- queries --------------------------------------------------------------------------

    def query(
        self,
        node: exp.Expression,
        parent: Scope | None,
        ctes: dict[str, list[Column]] | None = None,
    ) -> list[Column]:
        """Translate a query (SELECT, set operation, parenthesised query); its result columns."""
        if isinstance(node, exp.Subquery):
            check_args(node, {"this", "alias"}, "subquery")
            return self.query(node.this, parent, ctes)
        if isinstance(node, exp.Union | exp.Except | exp.Intersect):
            check_args(
                node,
                {"this", "expression", "distinct", "order", "limit", "offset", "with_"},
                "set operation",
            )
            scope = Scope(parent, ctes)
            self._with(node, scope)
            columns = self.query(node.this, parent, scope.ctes)
            self.query(node.expression, parent, scope.ctes)
            self._order_limit(node, Scope(parent, scope.ctes))
            return columns
        if isinstance(node, exp.Select):
            return self.select(node, parent, ctes)
        raise _errors.unsupported(type(node).__name__.upper())

    def _with(self, node: exp.Expression, scope: Scope) -> None:
        with_ = node.args.get("with_")
        if not with_:
            return
        check_args(with_, {"expressions"}, "WITH")
        for cte in with_.expressions:
            check_args(cte, {"this", "alias"}, "common table expression")
            name = cte.alias_or_name
            scope.ctes[name.lower()] = None  # type: ignore[assignment]  # recursion marker
            columns = self.query(cte.this, None, scope.ctes)
            names = [c.name for c in cte.args["alias"].columns] if cte.args["alias"].columns else []
            if names:
                if len(names) != len(columns):
                    raise _errors.SqlError(
                        8158, f"'{name}' has more columns than were specified in the column list."
                    )
                columns = [
                    Column(n, c.type, c.nullable) for n, c in zip(names, columns, strict=True)
                ]
            scope.ctes[name.lower()] = columns

    def select(
        self, node: exp.Select, parent: Scope | None, ctes: dict[str, list[Column]] | None = None
    ) -> list[Column]:
        check_args(
            node,
            {"expressions", "from_", "joins", "where", "group", "having", "order", "limit",
             "offset", "distinct", "with_"},
            "SELECT",
        )  # fmt: skip
        if not node.expressions:
            raise _errors.syntax_error("SELECT")
        scope = Scope(parent, ctes)
        self._with(node, scope)
        from_ = node.args.get("from_")
        if from_:
            self._source(from_.this, scope)
        for join in node.args.get("joins") or []:
            check_args(join, {"this", "on", "side", "kind", "using"}, "JOIN")
            if join.args.get("kind") and join.args["kind"].upper() not in (
                "INNER",
                "OUTER",
                "CROSS",
            ):
                raise _errors.unsupported(f"{join.args['kind']} JOIN")
            self._source(join.this, scope)
        for join in node.args.get("joins") or []:
            if join.args.get("on"):
                self.expr(join.args["on"], scope)
        columns = self._projections(node, scope)
        for key in ("where", "having"):
            if node.args.get(key):
                self.expr(node.args[key].this, scope)
        if node.args.get("group"):
            check_args(node.args["group"], {"expressions"}, "GROUP BY")
            for item in node.args["group"].expressions:
                self.expr(item, scope)
        distinct = node.args.get("distinct")
        if distinct is not None and distinct.args.get("on"):
            raise _errors.unsupported("DISTINCT ON")
        self._order_limit(node, scope)
        return columns

    def _order_limit(self, node: exp.Expression, scope: Scope) -> None:
        if node.args.get("order"):
            check_args(node.args["order"], {"expressions"}, "ORDER BY")
            for item in node.args["order"].expressions:
                check_args(item, {"this", "desc", "nulls_first"}, "ORDER BY")
                self.expr(item.this, scope)
        limit = node.args.get("limit")
        offset = node.args.get("offset")
        # As SQL Server: OFFSET/FETCH belong to ORDER BY, and TOP does not go with OFFSET.
        if (offset is not None or isinstance(limit, exp.Fetch)) and not node.args.get("order"):
            raise _errors.syntax_error("OFFSET")
        if offset is not None and limit is not None and not isinstance(limit, exp.Fetch):
            raise _errors.SqlError(
                10741,
                "A TOP can not be used in the same query or sub-query as a OFFSET.",
                severity=15,
            )
        if limit is not None:
            options = limit.args.get("limit_options")
            if options is not None and (
                options.args.get("percent") or options.args.get("with_ties")
            ):
                raise _errors.unsupported("TOP ... PERCENT / WITH TIES")
            if isinstance(limit, exp.Fetch):
                check_args(limit, {"direction", "count", "limit_options"}, "FETCH")
                if limit.args.get("count") is not None:
                    self.expr(limit.args["count"], scope)
            else:
                check_args(limit, {"expression", "limit_options"}, "TOP")
                self.expr(limit.expression, scope)
        if offset is not None:
            self.expr(offset.expression, scope)

    def table(self, node: exp.Table) -> TableInfo:
        """The catalog table a Table node names (qualifiers checked and stripped)."""
        check_args(node, {"this", "db", "catalog", "alias", "hints"}, "table")
        if isinstance(node.this, exp.Parameter) and node.this.name.lower() in self.ctx.table_params:
            raise _tvp.readonly(node.this.name)
        name = object_name(node)
        full = ".".join(p for p in (node.catalog, node.db, node.name) if p)
        if node.catalog and node.catalog.lower() != self.ctx.database.lower():
            raise _errors.invalid_object(full)
        if node.db and view_name(node.db, node.name):
            raise _errors.SqlError(259, "Ad hoc updates to system catalogs are not allowed.")
        for hint in node.args.get("hints") or []:
            names = {e.name.upper() for e in hint.expressions}
            if not names <= _TABLE_HINTS:
                raise _errors.unsupported(f"table hint {', '.join(sorted(names - _TABLE_HINTS))}")
        node.set("hints", None)
        node.set("db", None)
        node.set("catalog", None)
        info = None if is_internal(name) else self.ctx.catalog.table(name)
        if info is None and name.startswith("@"):
            raise _errors.SqlError(1087, f'Must declare the table variable "{name}".', severity=15)
        if info is None:
            raise _errors.invalid_object(full if name.lower() == full.lower() else name)
        if info.name != node.name or not isinstance(node.this, exp.Identifier):
            # #t, @t and sales.t are SQLite tables named "#t", "@t~N" and "sales.t"
            if "." in name and not node.alias:
                node.set("alias", exp.TableAlias(this=exp.to_identifier(node.name)))
            node.set("this", exp.to_identifier(info.name, quoted=True))
        self.tables.add(info.name.lower())
        return info

    def _source(self, node: exp.Expression, scope: Scope) -> None:
        if isinstance(node, exp.Table) and node.name.lower() in scope.ctes and not node.db:
            check_args(node, {"this", "alias"}, "table")
            columns = scope.ctes[node.name.lower()]
            if columns is None:
                raise _errors.unsupported("recursive common table expressions")
            scope.add(node.alias_or_name, columns)
            return
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Parameter):
            table_type = self.ctx.table_params.get(node.this.name.lower())
            if table_type is not None:  # a table-valued parameter
                scope.add(node.alias_or_name, list(table_type))
                node.replace(_tvp.source(node, table_type))
                return
        if isinstance(node, exp.Table) and (view := substitute(node, self.ctx.database)):
            self.tables.add(view[0])  # "sys.tables": the session builds its rows
            scope.add(node.alias_or_name, view[1])
            return
        if isinstance(node, exp.Table):
            info = self.table(node)
            scope.add(
                node.alias_or_name, [Column(c.name, c.type, c.nullable) for c in info.columns]
            )
            return
        if isinstance(node, exp.Subquery):
            alias = node.args.get("alias")
            if alias is None:
                raise _errors.SqlError(
                    102, "Incorrect syntax near ')'. A derived table needs an alias.", severity=15
                )
            if alias.columns:
                raise _errors.unsupported("derived table column list")
            columns = self.query(node.this, None, scope.ctes)
            scope.add(node.alias_or_name, columns)
            return
        raise _errors.unsupported(f"{type(node).__name__.upper()} as a row source")

    def _projections(self, node: exp.Select, scope: Scope) -> list[Column]:
        columns: list[Column] = []
        for item in node.expressions:
            if isinstance(item, exp.Star):
                columns.extend(c for _, cols in scope.sources for c in cols)
                continue
            if isinstance(item, exp.Column) and isinstance(item.this, exp.Star):
                source = next(
                    (cols for alias, cols in scope.sources if alias == item.table.lower()), None
                )
                if source is None:
                    raise _errors.SqlError(
                        107,
                        f"The column prefix '{item.table}' does not match with a table name or "
                        "alias name used in the query.",
                    )
                columns.extend(source)
                continue
            if isinstance(item, exp.EQ) and isinstance(item.this, exp.Parameter):
                raise _errors.unsupported("SELECT @variable = ... here")
            target = item.this if isinstance(item, exp.Alias) else item
            if isinstance(item, exp.Alias):
                check_args(item, {"this", "alias"}, "alias")
            sql_type = self.expr(target, scope)
            target = item.this if isinstance(item, exp.Alias) else node.expressions[len(columns)]
            name = (
                item.alias
                if isinstance(item, exp.Alias)
                else (target.name if isinstance(target, exp.Column) else "")
            )
            nullable = True
            if isinstance(target, exp.Column):
                found = scope.resolve(target.table, target.name)
                nullable = found.nullable if found is not None else True
            elif isinstance(target, exp.Literal):
                nullable = False
            columns.append(Column(name, sql_type or _UNKNOWN, nullable))
        return columns

    # -- expressions ----------------------------------------------------------------------

    def expr(self, node: exp.Expression, scope: Scope) -> SqlType | None:
        """Translate one expression in place; its SQL Server type (None: unknown)."""
        handler = self._handlers.get(type(node))
        if handler is None:
            raise _errors.unsupported(_describe(node))
        return handler(node, scope)

    def _first(self, node: exp.Expression, scope: Scope) -> SqlType | None:
        result = self.expr(node.this, scope)
        for key, value in node.args.items():
            if key != "this" and isinstance(value, exp.Expression):
                self.expr(value, scope)
        return result

    def _substring(self, node: exp.Expression, scope: Scope) -> SqlType | None:
        """SUBSTRING in UTF-16 code units (SQLite's substr counts code points)."""
        result = self._first(node, scope)
        start, length = node.args.get("start"), node.args.get("length")
        if start is None or length is None:
            raise _errors.SqlError(174, "The substring function requires 3 argument(s).")
        node.replace(anon("tds_substring", node.this, start, length))
        if result is not None and result.name in ("char", "nchar"):
            return SqlType(
                "var" + result.name if result.name == "char" else "nvarchar", length=result.length
            )
        return result

    def _column(self, node: exp.Expression, scope: Scope) -> SqlType | None:
        assert isinstance(node, exp.Column)
        if not node.table and node.name.lower() == "0x":  # the empty binary constant
            node.replace(exp.HexString(this=""))
            return SqlType("varbinary", length=1)
        if isinstance(node.this, exp.Star):
            raise _errors.unsupported("* here")
        if node.args.get("db") or node.args.get("catalog"):
            node.set("db", None)
            node.set("catalog", None)
        found = scope.resolve(node.table, node.name)
        return found.type if found is not None else None

    def _literal(self, node: exp.Expression, scope: Scope) -> SqlType:
        assert isinstance(node, exp.Literal)
        if node.is_string:  # longer than 8,000 characters: varchar(max), as in SQL Server
            length = len(node.this)
            return SqlType("varchar", length=max(1, length) if length <= 8000 else -1)
        result = ty.literal_number(node.this)
        if result.name == "decimal" and isinstance(decimal_storage(Decimal(node.this)), str):
            # SQLite would read it as a REAL and lose digits: keep the exact text.
            node.replace(text(node.this))
        return result

    def _neg(self, node: exp.Expression, scope: Scope) -> SqlType | None:
        inner = node.this
        if isinstance(inner, exp.Literal) and not inner.is_string:
            # a signed constant: -9223372036854775808 is exact (SQLite reads the unsigned text
            # as a REAL), typed like its digits (decimal(19,0), as SQL Server does)
            result = ty.literal_number(inner.this)
            signed = "-" + inner.this
            if result.name == "decimal" and isinstance(decimal_storage(Decimal(signed)), str):
                node.replace(text(signed))
            return result
        operand = self.expr(inner, scope)
        if operand is not None and operand.name in ty.EXACT_FRACTIONAL:
            zero = exp.Literal.number(0)
            node.replace(anon("tds_decimal_op", text("-"), zero, node.this, text(str(operand))))
        return operand

    def _national(self, node: exp.Expression, scope: Scope) -> SqlType:
        node.replace(text(node.this))
        units = utf16_len(node.this)
        return SqlType("nvarchar", length=max(1, units) if units <= 4000 else -1)

    def _hex(self, node: exp.Expression, scope: Scope) -> SqlType:
        return SqlType("varbinary", length=max(1, len(node.this) // 2))

    def _parameter(self, node: exp.Expression, scope: Scope) -> SqlType | None:
        name = node.name.lower()
        if not isinstance(node.this, exp.Var) or not name:
            raise _errors.unsupported(node.sql("tsql"))
        node.this.set("this", name)
        if name.startswith("__g_"):
            if name not in GLOBAL_TYPES:
                raise _errors.undeclared_variable("@@" + name[4:].upper())
            return GLOBAL_TYPES[name]
        if name not in self.ctx.variables:
            raise _errors.undeclared_variable("@" + name)
        return self.ctx.variables[name]

    def _arith(self, node: exp.Expression, scope: Scope) -> SqlType | None:
        left, right = self.expr(node.this, scope), self.expr(node.expression, scope)
        if isinstance(node, exp.Add) and (ty.is_string(left) or ty.is_string(right)):
            if (ty.is_string(left) or left is None) and (ty.is_string(right) or right is None):
                node.replace(exp.DPipe(this=node.this, expression=node.expression))
                return ty.concatenated(left, right)
        for side, other in ((node.this, right), (node.expression, left)):
            mine = left if side is node.this else right
            if other is not None and ty.is_string(mine) and ty.is_numeric(other):
                self._coerce(side, mine, other)
        symbols: dict[type[exp.Expression], str] = {
            exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/", exp.Mod: "%"
        }  # fmt: skip
        symbol = symbols[type(node)]
        left, right = (
            ty.integer_constant(node.this, left, right),
            ty.integer_constant(node.expression, right, left),
        )
        result = ty.arithmetic(symbol, left, right)
        if result is not None and result.name in ty.EXACT_FRACTIONAL:
            # exact decimal/money arithmetic in Python (SQLite would use integers or doubles)
            node.replace(
                anon("tds_decimal_op", text(symbol), node.this, node.expression, text(str(result)))
            )
        elif symbol in "/%":
            node.replace(
                anon("tds_div" if symbol == "/" else "tds_mod", node.this, node.expression)
            )
        return result

    def _coerce(
        self, node: exp.Expression, source: SqlType | None, target: SqlType
    ) -> exp.Expression:
        """Wrap ``node`` in a conversion to ``target`` (returns the new node)."""
        wrapped = anon(
            "tds_cast", node.copy(), text(str(target)), text(str(source) if source else "")
        )
        node.replace(wrapped)
        return wrapped

    def _compare(self, node: exp.Expression, scope: Scope) -> SqlType:
        left, right = self.expr(node.this, scope), self.expr(node.expression, scope)
        self._align(node.this, left, node.expression, right)
        if "datetimeoffset" in (getattr(left, "name", None), getattr(right, "name", None)):
            # Stored as "<UTC instant> @<offset>": compare the instants only.
            for side in (node.this, node.expression):
                side.replace(
                    anon("substr", side.copy(), exp.Literal.number(1), exp.Literal.number(27))
                )
        return ty.BIT

    def _align(
        self, a: exp.Expression, at: SqlType | None, b: exp.Expression, bt: SqlType | None
    ) -> None:
        """Convert one side of a comparison to the other's type where SQL Server would."""
        if at is None or bt is None or at.name == bt.name:
            return
        if ty.is_string(at) and not ty.is_string(bt) and bt.name not in ("varbinary", "binary"):
            self._coerce(a, at, bt)
        elif ty.is_string(bt) and not ty.is_string(at) and at.name not in ("varbinary", "binary"):
            self._coerce(b, bt, at)
        elif at.name in TEMPORAL and bt.name in TEMPORAL:
            target = ty.higher(at, bt)
            assert target is not None
            self._coerce(a if target is bt else b, at if target is bt else bt, target)

    def _logic(self, node: exp.Expression, scope: Scope) -> SqlType:
        for key in ("this", "expression"):
            if isinstance(node.args.get(key), exp.Expression):
                self.expr(node.args[key], scope)
        if node.args.get("escape"):
            self.expr(node.args["escape"], scope)
        return ty.BIT

    def _in(self, node: exp.Expression, scope: Scope) -> SqlType:
        check_args(node, {"this", "expressions", "query"}, "IN")
        self.expr(node.this, scope)
        for item in node.expressions:
            self.expr(item, scope)
        if node.args.get("query"):
            self.query(node.args["query"], scope)
        return ty.BIT

    def _between(self, node: exp.Expression, scope: Scope) -> SqlType:
        this = self.expr(node.this, scope)
        for key in ("low", "high"):
            other = node.args[key]
            self._align(node.this, this, other, self.expr(other, scope))
        if this is not None and this.name == "datetimeoffset":
            for side in (node.this, node.args["low"], node.args["high"]):
                side.replace(
                    anon("substr", side.copy(), exp.Literal.number(1), exp.Literal.number(27))
                )
        return ty.BIT

    def _exists(self, node: exp.Expression, scope: Scope) -> SqlType:
        self.query(node.this, scope)
        return ty.BIT

    def _scalar_subquery(self, node: exp.Expression, scope: Scope) -> SqlType | None:
        columns = self.query(node, scope)
        return columns[0].type if columns and columns[0].type is not _UNKNOWN else None

    def _case(self, node: exp.Expression, scope: Scope) -> SqlType | None:
        if node.this is not None:
            self.expr(node.this, scope)
        result = None
        for branch in node.args.get("ifs") or []:
            self.expr(branch.this, scope)
            result = ty.higher(result, self.expr(branch.args["true"], scope))
        if node.args.get("default") is not None:
            result = ty.higher(result, self.expr(node.args["default"], scope))
        return result

    def _branches(self, node: exp.Expression, scope: Scope) -> SqlType | None:
        if isinstance(node, exp.If):
            self.expr(node.this, scope)
            values = [node.args.get("true"), node.args.get("false")]
        elif isinstance(node, exp.Binary):
            values = [node.this, node.expression]
        else:
            values = [node.this, *node.expressions]
        result = None
        for value in values:
            if value is not None:
                result = ty.higher(result, self.expr(value, scope))
        return result

    def _cast(self, node: exp.Expression, scope: Scope) -> SqlType:
        check_args(node, {"this", "to", "safe"}, "CAST")
        target = ty.sql_type_of(node.args["to"])
        source = self.expr(node.this, scope)
        name = (
            "tds_try_cast" if isinstance(node, exp.TryCast) or node.args.get("safe") else "tds_cast"
        )
        node.replace(anon(name, node.this, text(str(target)), text(str(source) if source else "")))
        return target

    def _convert(self, node: exp.Expression, scope: Scope) -> SqlType:
        check_args(node, {"this", "expression", "style", "safe"}, "CONVERT")
        target = ty.sql_type_of(node.this)
        source = self.expr(node.expression, scope)
        style = node.args.get("style")
        source_text = text(str(source) if source else "")
        if style is not None:
            if not (
                isinstance(style, exp.Literal)
                and style.this.isdigit()
                and int(style.this) in _STYLES
            ):
                raise _errors.unsupported(f"CONVERT style {style.sql('tsql')}")
            new = anon("tds_convert", node.expression, text(str(target)), source_text, style.copy())
        else:
            name = "tds_try_cast" if node.args.get("safe") else "tds_cast"
            new = anon(name, node.expression, text(str(target)), source_text)
        node.replace(new)
        return target

    def _aggregate(self, node: exp.Expression, scope: Scope) -> SqlType | None:
        if isinstance(node, exp.Count):
            if node.this is not None and not isinstance(node.this, exp.Star):
                self.expr(node.this, scope)
            return ty.aggregate("count_big" if node.args.get("big_int") else "count", None)
        check_args(node, {"this"}, type(node).__name__.upper())
        arg = self.expr(node.this, scope)
        return ty.aggregate(type(node).__name__.lower(), arg)

    def _distinct(self, node: exp.Expression, scope: Scope) -> SqlType | None:
        result = None
        for item in node.expressions:
            result = self.expr(item, scope)
        return result

    def _string_agg(self, node: exp.Expression, scope: Scope) -> SqlType:
        check_args(node, {"this", "separator"}, "STRING_AGG")
        arg = self.expr(node.this, scope)
        if not ty.is_string(arg):
            self._coerce(node.this, arg, ty.NVARCHAR_MAX)
        if node.args.get("separator") is not None:
            self.expr(node.args["separator"], scope)
        wide = arg is None or not ty.is_string(arg) or arg.name.startswith("n")
        return SqlType("nvarchar" if wide else "varchar", length=-1)

    def _window(self, node: exp.Expression, scope: Scope) -> SqlType | None:
        check_args(node, {"this", "partition_by", "order", "over"}, "OVER")
        result = self.expr(node.this, scope)
        for item in node.args.get("partition_by") or []:
            self.expr(item, scope)
        if node.args.get("order"):
            for item in node.args["order"].expressions:
                self.expr(item.this, scope)
        return result

    def _float_function(self, node: exp.Expression, scope: Scope) -> SqlType:
        for value in node.args.values():
            if isinstance(value, exp.Expression):
                self.expr(value, scope)
        return ty.FLOAT

    def _trim(self, node: exp.Expression, scope: Scope) -> SqlType | None:
        check_args(node, {"this", "position"}, "TRIM")
        return self.expr(node.this, scope)


#: The type of a result column nothing is known about (the first row decides).
_UNKNOWN = SqlType("__unknown")
UNKNOWN = _UNKNOWN


def object_name(node: exp.Table) -> str:
    """A table reference's name as T-SQL writes it: ``t`` (also for ``dbo.t`` and
    ``db.dbo.t``), ``sales.t``, ``#t``, ``##t``, or ``@t`` for a table variable.

    Raises:
        SqlError: 40517 for anything else used as a table (a function call, ...).
    """
    ident = node.this
    if isinstance(ident, exp.Parameter) and not node.db:
        return "@" + ident.name
    if not isinstance(ident, exp.Identifier):
        raise _errors.unsupported(f"{ident.sql('tsql')[:40]} as a table")
    if ident.args.get("global_"):
        return "##" + ident.name
    if ident.args.get("temporary"):
        return "#" + ident.name
    if node.db and node.db.lower() != "dbo":
        return f"{node.db}.{ident.name}"
    return ident.name


def is_unknown(sql_type: SqlType) -> bool:
    return sql_type is _UNKNOWN


def _describe(node: exp.Expression) -> str:
    if isinstance(node, exp.Func):
        return f"{node.sql_name()} function"
    return type(node).__name__.upper()


def to_sqlite(node: exp.Expression) -> str:
    """SQLite SQL for a translated tree; sqlglot must not drop anything (RAISE)."""
    try:
        return node.sql(dialect="sqlite", unsupported_level=ErrorLevel.RAISE)
    except SqlglotError as exc:
        raise _errors.unsupported(str(exc).splitlines()[0]) from None
