"""DDL and DML statements: CREATE/DROP TABLE, CREATE INDEX, INSERT, UPDATE, DELETE.

CREATE TABLE is written by us rather than sqlglot: each column gets the SQLite affinity of its
storage form (_values.py), a length CHECK for (n)varchar(n)/varbinary(n) (SQL Server error 2628),
NOCASE collation for strings and GUIDs (SQL Server's default collation is case-insensitive), and an
IDENTITY primary key becomes ``INTEGER PRIMARY KEY AUTOINCREMENT``.  Other integer primary keys
are declared ``INT`` so that SQLite does not turn them into rowid aliases that accept NULL.
INSERT and UPDATE convert every value to its column's declared type (``tds_cast``), as SQL Server's
implicit conversion does, so the stored form is always the canonical one.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from . import _errors
from ._builtins import anon, text
from ._catalog import ColumnInfo, TableInfo, is_internal, make_table
from ._output import Output, output
from ._scope import Scope
from ._translate import Translator, check_args, object_name, to_sqlite
from ._types import (
    BINARY_TYPES,
    DECIMAL_TYPES,
    FLOAT_TYPES,
    INTEGER_TYPES,
    MONEY_TYPES,
    SPECIAL_TYPES,
    STRING_TYPES,
    Column,
    SqlType,
)
from ._typing import sql_type_of


@dataclass(frozen=True)
class Plan:
    """A translated DDL/DML statement.

    Attributes:
        verb: "INSERT" | "UPDATE" | "DELETE" | "CREATE TABLE" | "DROP TABLE" | "CREATE INDEX".
        sql: SQLite statements to run in order.
        table: the table written (for INSERT/UPDATE/DELETE, and the new table of CREATE TABLE).
        dropped: the tables DROP TABLE removes.
    """

    verb: str
    sql: tuple[str, ...]
    table: TableInfo | None = None
    dropped: tuple[str, ...] = ()
    returns: Output | None = None  # the OUTPUT clause (SQLite RETURNING)

    @property
    def output(self) -> tuple[Column, ...]:
        """The columns of the result set OUTPUT sends the client (none with OUTPUT INTO)."""
        if self.returns is None or self.returns.into is not None:
            return ()
        return self.returns.columns


def affinity(sql_type: SqlType) -> str:
    """The SQLite column declaration for a SQL Server type (see the module docstring)."""
    name = sql_type.name
    if name in INTEGER_TYPES:
        return "INT"
    if name in FLOAT_TYPES:
        return "REAL"
    if name in BINARY_TYPES:
        return "BLOB"
    if name in DECIMAL_TYPES or name in MONEY_TYPES:
        return ""  # no affinity: INTEGER, REAL or TEXT as _values.decimal_storage chose
    if name in STRING_TYPES or name == "uniqueidentifier":
        return "TEXT COLLATE NOCASE"
    return "TEXT"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _identity(kind: exp.Expression) -> tuple[int, int]:
    start = kind.args.get("start")
    step = kind.args.get("increment")
    return int(start.this) if start else 1, int(step.this) if step else 1


def create_table(node: exp.Create, tr: Translator, *, temp: bool = False) -> Plan:
    """Plan a CREATE TABLE (see the module docstring); ``temp``: a table variable's table,
    named by the caller."""
    check_args(node, {"this", "kind", "properties"}, "CREATE TABLE")
    schema = node.this
    if not isinstance(schema, exp.Schema) or not isinstance(schema.this, exp.Table):
        raise _errors.unsupported("CREATE TABLE ... AS / without columns")
    table = schema.this
    check_args(table, {"this", "db", "catalog"}, "CREATE TABLE")
    properties = node.args.get("properties")
    if properties is not None and not all(
        isinstance(p, exp.TemporaryProperty) for p in properties.expressions
    ):
        raise _errors.unsupported("CREATE TABLE options")
    if table.catalog and table.catalog.lower() != tr.ctx.database.lower():
        raise _errors.invalid_object(table.sql("tsql"))
    name = table.name if temp else object_name(table)
    local = temp or (name.startswith("#") and not name.startswith("##"))
    if not temp and (is_internal(name) or tr.ctx.catalog.table(name) is not None):
        raise _errors.already_exists(name)
    columns: list[ColumnInfo] = []
    lines: list[str] = []
    primary: list[str] = []
    pk_name = f"PK_{name}"
    identity: tuple[str, int] | None = None
    table_constraints: list[str] = []
    for item in schema.expressions:
        if isinstance(item, exp.ColumnDef):
            info, line, is_pk, seed = _column(item, tr, local)
            columns.append(info)
            lines.append(line)
            if is_pk:
                primary.append(info.name)
            if seed is not None:
                identity = (info.name, seed)
            continue
        if isinstance(item, exp.Constraint):
            # CONSTRAINT name PRIMARY KEY [CLUSTERED|NONCLUSTERED] (...) | UNIQUE ... | FOREIGN KEY
            inner = item.expressions
            if isinstance(inner[0], exp.PrimaryKeyColumnConstraint) and len(inner) == 2:
                inner = [exp.PrimaryKey(expressions=_index_columns(inner[1]))]
            if len(inner) == 1 and isinstance(inner[0], exp.PrimaryKey):
                pk_name = item.name
            if len(inner) == 1 and isinstance(inner[0], exp.PrimaryKey | exp.ForeignKey):
                item = inner[0]
            elif len(inner) == 1 and isinstance(inner[0], exp.UniqueColumnConstraint):
                item = exp.UniqueColumnConstraint(
                    this=exp.Schema(expressions=_index_columns(inner[0].this))
                )
        if isinstance(item, exp.PrimaryKey):
            primary.extend(
                o.this.name if isinstance(o, exp.Ordered) else o.name for o in item.expressions
            )
        elif isinstance(item, exp.UniqueColumnConstraint) and isinstance(item.this, exp.Schema):
            names = ", ".join(_quote(i.name) for i in item.this.expressions)
            table_constraints.append(f"UNIQUE ({names})")
        elif isinstance(item, exp.ForeignKey):
            if not local:  # SQL Server does not enforce foreign keys on temporary tables
                _reference_by_name(item.args["reference"])
                table_constraints.append(to_sqlite(item))
        else:
            raise _errors.unsupported(f"table constraint {item.sql('tsql')[:60]}")
    by_name = {c.name.lower(): c for c in columns}
    for pk_column in primary:
        if pk_column.lower() not in by_name:
            raise _errors.invalid_column(pk_column)
    if len(primary) != len({p.lower() for p in primary}):
        raise _errors.SqlError(
            8110, f"Cannot add multiple PRIMARY KEY constraints to table '{name}'."
        )
    if identity is not None:
        if [p.lower() for p in primary] != [identity[0].lower()]:
            raise _errors.unsupported("an IDENTITY column that is not the whole primary key")
        index = next(i for i, c in enumerate(columns) if c.name.lower() == identity[0].lower())
        lines[index] = lines[index].replace(" INT ", " INTEGER PRIMARY KEY AUTOINCREMENT ", 1)
    elif primary:
        table_constraints.insert(
            0, f"CONSTRAINT {_quote(pk_name)} PRIMARY KEY ({', '.join(_quote(p) for p in primary)})"
        )
    # SQL Server primary key columns are NOT NULL.
    pk_lower = {p.lower() for p in primary}
    columns = [
        ColumnInfo(c.name, c.type, c.nullable and c.name.lower() not in pk_lower, c.identity)
        for c in columns
    ]
    lines = [
        line if "NOT NULL" in line or c.name.lower() not in pk_lower else line + " NOT NULL"
        for line, c in zip(lines, columns, strict=True)
    ]
    create = "CREATE TEMP TABLE" if local else "CREATE TABLE"
    sql = [f"{create} {_quote(name)} (\n  " + ",\n  ".join(lines + table_constraints) + "\n)"]
    if identity is not None and identity[1] != 1:
        sql.append(
            f"INSERT INTO {'temp.' if local else ''}sqlite_sequence (name, seq) VALUES "
            f"('{name.replace(chr(39), chr(39) * 2)}', {identity[1] - 1})"
        )
    return Plan("CREATE TABLE", tuple(sql), make_table(name, columns, pk_name if primary else None))


def _index_columns(node: exp.Expression) -> list[exp.Expression]:
    """The columns of ``PRIMARY KEY|UNIQUE [CLUSTERED|NONCLUSTERED] (a [ASC|DESC], ...)``."""
    if isinstance(node, exp.Schema):
        return list(node.expressions)
    if isinstance(node, exp.ClusteredColumnConstraint | exp.NonClusteredColumnConstraint):
        items = node.this if isinstance(node.this, list) else [node.this]
        return [i.this if isinstance(i, exp.Ordered) else i for i in items]
    raise _errors.unsupported(f"table constraint {node.sql('tsql')[:60]}")


def _reference_by_name(reference: exp.Reference) -> None:
    """``REFERENCES [dbo].[t] (id)``: name the referenced table as SQLite knows it (``t``;
    ``sales.t`` for another schema)."""
    target = reference.this
    table = target.this if isinstance(target, exp.Schema) else target
    if isinstance(table, exp.Table):
        table.replace(exp.Table(this=exp.to_identifier(object_name(table), quoted=True)))


def _column(
    item: exp.ColumnDef, tr: Translator, local: bool
) -> tuple[ColumnInfo, str, bool, int | None]:
    check_args(item, {"this", "kind", "constraints"}, "column definition")
    if item.args.get("kind") is None:
        raise _errors.SqlError(
            173, f"The definition for column '{item.name}' must include a data type.", severity=15
        )
    sql_type = sql_type_of(item.args["kind"])
    if sql_type.name in STRING_TYPES | BINARY_TYPES and sql_type.length == 30:
        sql_type = (
            SqlType(sql_type.name, length=1)
            if "(" not in item.args["kind"].sql("tsql")
            else sql_type
        )
    nullable, is_pk, seed = True, False, None
    parts = [_quote(item.name), affinity(sql_type)]
    for constraint in item.args.get("constraints") or []:
        kind = constraint.args.get("kind")
        if isinstance(kind, exp.NotNullColumnConstraint):
            nullable = bool(kind.args.get("allow_null"))
        elif isinstance(kind, exp.PrimaryKeyColumnConstraint):
            is_pk = True
        elif isinstance(kind, exp.GeneratedAsIdentityColumnConstraint):
            start, step = _identity(kind)
            if step != 1 or sql_type.name not in ("int", "bigint", "smallint", "tinyint"):
                raise _errors.unsupported("IDENTITY other than an integer column with increment 1")
            seed = start
            nullable = False
        elif isinstance(kind, exp.DefaultColumnConstraint):
            value = kind.this.copy()
            holder = exp.Paren(this=value)
            source = tr.expr(holder.this, Scope())
            converted = anon(
                "tds_cast", holder.this, text(str(sql_type)), text(str(source) if source else "")
            )
            parts.append(f"DEFAULT ({to_sqlite(converted)})")
        elif isinstance(kind, exp.UniqueColumnConstraint):
            parts.append("UNIQUE")
        elif isinstance(kind, exp.Reference):
            if not local:  # not enforced on temporary tables (as SQL Server)
                _reference_by_name(kind)
                parts.append(to_sqlite(kind))
        else:
            raise _errors.unsupported(f"column constraint {constraint.sql('tsql')[:60]}")
    if not nullable:
        parts.append("NOT NULL")
    if (
        sql_type.length is not None
        and sql_type.length > 0
        and sql_type.name.startswith(("var", "nvar"))
    ):
        counted = "tds_utf16_length" if sql_type.name == "nvarchar" else "length"
        check = f"{counted}({_quote(item.name)}) <= {sql_type.length}"
        parts.append(f"CONSTRAINT {_quote('tds_len_' + item.name)} CHECK ({check})")
    parts.insert(2, "")  # keeps " INT " matchable for the IDENTITY rewrite
    line = " ".join(p for p in parts[:2]) + " " + " ".join(p for p in parts[3:] if p)
    return (
        ColumnInfo(item.name, sql_type, nullable, seed is not None),
        line.rstrip() + " ",
        is_pk,
        seed,
    )


def create_plan(name: str, columns: list[ColumnInfo]) -> Plan:
    """CREATE TABLE for ``columns`` (SELECT ... INTO): types, lengths and collations only."""
    local = name.startswith("#") and not name.startswith("##")
    lines = []
    for column in columns:
        line = f"{_quote(column.name)} {affinity(column.type)}"
        sql_type = column.type
        if sql_type.length and sql_type.length > 0 and sql_type.name.startswith(("var", "nvar")):
            counted = "tds_utf16_length" if sql_type.name == "nvarchar" else "length"
            line += f" CHECK ({counted}({_quote(column.name)}) <= {sql_type.length})"
        lines.append(line)
    create = "CREATE TEMP TABLE" if local else "CREATE TABLE"
    sql = f"{create} {_quote(name)} (" + ", ".join(lines) + ")"
    return Plan("CREATE TABLE", (sql,), make_table(name, columns, None))


def drop_tables(node: exp.Drop, tr: Translator) -> Plan:
    check_args(node, {"this", "kind", "exists", "tables"}, "DROP")
    if str(node.args.get("kind", "")).upper() != "TABLE":
        raise _errors.unsupported(f"DROP {node.args.get('kind')}")
    tables = node.args.get("tables") or [node.this]
    names: list[str] = []
    for table in tables:
        name = object_name(table)
        info = None if is_internal(name) else tr.ctx.catalog.table(name)
        if info is None:
            if node.args.get("exists"):
                continue
            raise _errors.drop_denied(name)
        names.append(info.name)
    return Plan("DROP TABLE", tuple(f"DROP TABLE {_quote(n)}" for n in names), dropped=tuple(names))


def create_index(node: exp.Create, tr: Translator) -> Plan:
    index = node.this
    check_args(node, {"this", "kind", "unique"}, "CREATE INDEX")
    table_node = index.args.get("table")
    info = tr.table(table_node)
    columns = []
    for ordered in index.args["params"].args.get("columns") or []:
        name = ordered.this.name
        if info.column(name) is None:
            raise _errors.invalid_column(name)
        columns.append(_quote(name) + (" DESC" if ordered.args.get("desc") else ""))
    unique = "UNIQUE " if node.args.get("unique") else ""
    sql = f"CREATE {unique}INDEX {_quote(index.name)} ON {_quote(info.name)} ({', '.join(columns)})"
    return Plan("CREATE INDEX", (sql,), info)


def _convert_to(node: exp.Expression, source: SqlType | None, target: SqlType) -> None:
    if isinstance(node, exp.Null) or source == target:
        return
    node.replace(
        anon("tds_cast", node.copy(), text(str(target)), text(str(source) if source else ""))
    )


def insert(node: exp.Insert, tr: Translator, identity_insert: bool) -> Plan:
    check_args(node, {"this", "expression", "default", "with_", "returning"}, "INSERT")
    scope = Scope()
    tr._with(node, scope)
    target = node.this
    table_node = target.this if isinstance(target, exp.Schema) else target
    if not isinstance(table_node, exp.Table):
        raise _errors.syntax_error("INSERT")
    info = tr.table(table_node)
    if isinstance(target, exp.Schema):
        names = [i.name for i in target.expressions]
        columns = []
        for name in names:
            column = info.column(name)
            if column is None:
                raise _errors.invalid_column(name)
            columns.append(column)
    else:
        columns = [c for c in info.columns if not c.identity or identity_insert]
    if any(c.identity for c in columns) and not identity_insert:
        raise _errors.identity_insert(info.name)
    if len({c.name.lower() for c in columns}) != len(columns):
        raise _errors.SqlError(
            264,
            f"The column name '{columns[0].name}' is specified more than once in the SET clause "
            "or column list of an INSERT.",
        )
    schema = exp.Schema(
        this=table_node.copy(),
        expressions=[exp.to_identifier(c.name, quoted=True) for c in columns],
    )
    source = node.expression
    defaults: list[list[int]] = []  # per VALUES row: the positions that say DEFAULT
    if node.args.get("default") or source is None:
        node.set("this", table_node.copy())
    else:
        node.set("this", schema)
        if isinstance(source, exp.Values):
            check_args(source, {"expressions"}, "VALUES")
            for row in source.expressions:
                values = list(row.expressions)
                defaults.append(
                    [i for i, v in enumerate(values) if _is_default(v) and i < len(columns)]
                )
                if len(values) != len(columns):
                    more = len(values) > len(columns)
                    raise _errors.SqlError(
                        110 if more else 109,
                        f"There are {'fewer' if more else 'more'} columns in the INSERT "
                        "statement than values specified in the VALUES clause. The number of "
                        "values in the VALUES clause must match the number of columns "
                        "specified in the INSERT statement.",
                    )
                for index, (value, column) in enumerate(zip(values, columns, strict=True)):
                    if index in defaults[-1]:
                        continue
                    source_type = tr.expr(value, scope)
                    if column.type.name in SPECIAL_TYPES:
                        # tr.expr may have replaced the node (a CAST becomes tds_cast): an xml
                        # or sql_variant column converts the expression now in the row
                        value = row.expressions[index]
                    _convert_to(value, source_type, column.type)
        else:
            produced = tr.query(source, None, scope.ctes)
            if len(produced) != len(columns):
                raise _errors.SqlError(
                    121,
                    "The select list for the INSERT statement contains more items than the "
                    "insert list. The number of SELECT values must match the number of INSERT "
                    "columns."
                    if len(produced) > len(columns)
                    else "The select list for the INSERT statement contains fewer items than the "
                    "insert list. The number of SELECT values must match the number of INSERT "
                    "columns.",
                )
            if isinstance(source, exp.Select) and not any(
                isinstance(e, exp.Star)
                or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star))
                for e in source.expressions
            ):
                for item, made, column in zip(
                    list(source.expressions), produced, columns, strict=True
                ):
                    value = item.this if isinstance(item, exp.Alias) else item
                    _convert_to(
                        value, None if made.type.name == "__unknown" else made.type, column.type
                    )
    returned = output(node, info, tr, "INSERT")
    if any(defaults):
        return Plan("INSERT", _rows_with_defaults(node, defaults), info, returns=returned)
    return Plan("INSERT", (to_sqlite(node),), info, returns=returned)


def _is_default(value: exp.Expression) -> bool:
    return isinstance(value, exp.Var) and value.name.upper() == "DEFAULT"


def _rows_with_defaults(node: exp.Insert, defaults: list[list[int]]) -> tuple[str, ...]:
    """``VALUES (1, DEFAULT), (DEFAULT, 2)`` (Kysely fills a multi-row INSERT's missing columns
    so): SQLite has no DEFAULT in VALUES, so each row becomes an INSERT of its other columns
    (``DEFAULT VALUES`` when none is left), which gives the rest their defaults."""
    schema = node.this
    statements = []
    for row, skipped in zip(node.expression.expressions, defaults, strict=True):
        keep = [i for i in range(len(row.expressions)) if i not in skipped]
        one = node.copy()
        if not keep:
            one.set("this", schema.this.copy())
            one.set("expression", None)
            one.set("default", True)
        else:
            one.set(
                "this",
                exp.Schema(
                    this=schema.this.copy(), expressions=[schema.expressions[i] for i in keep]
                ),
            )
            one.set(
                "expression",
                exp.Values(expressions=[exp.Tuple(expressions=[row.expressions[i] for i in keep])]),
            )
        statements.append(to_sqlite(one))
    return tuple(statements)


def _update_from(node: exp.Update, tr: Translator, scope: Scope) -> TableInfo:
    """T-SQL ``UPDATE t SET ... FROM a t JOIN b ON ...`` -> SQLite ``UPDATE a AS t SET ...
    FROM b WHERE <join conditions> AND <where>`` (inner joins only)."""
    first = node.args["from_"].this
    joins = list(first.args.get("joins") or [])
    first.set("joins", None)
    sources: list[exp.Expression] = [first]
    conditions: list[exp.Expression] = []
    for join in joins:
        check_args(join, {"this", "on", "kind"}, "UPDATE ... FROM join")
        if str(join.args.get("kind") or "INNER").upper() not in ("INNER", "CROSS"):
            raise _errors.unsupported("UPDATE ... FROM with an outer join")
        sources.append(join.this)
        if join.args.get("on") is not None:
            conditions.append(join.args["on"])
    wanted = node.this.name.lower()
    matches = [s for s in sources if isinstance(s, exp.Table) and s.alias_or_name.lower() == wanted]
    if len(matches) > 1:
        raise _errors.unsupported("UPDATE ... FROM naming its target twice")
    target = matches[0] if matches else node.this  # T-SQL: the target may stay out of FROM
    others = [s for s in sources if s is not target]
    info = tr.table(target)
    scope.add(target.alias_or_name, [Column(c.name, c.type, c.nullable) for c in info.columns])
    for other in others:
        tr._source(other, scope)
    node.set("this", target.copy())
    if others:
        from_ = exp.From(this=others[0].copy())
        node.set("from_", from_)
        node.set("joins", None)
        for other in others[1:]:
            from_.this.append("joins", exp.Join(this=other.copy(), kind="CROSS"))
    else:
        node.set("from_", None)
    where = node.args.get("where")
    predicates = [c.copy() for c in conditions] + ([where.this] if where is not None else [])
    if predicates:
        node.set("where", exp.Where(this=exp.and_(*predicates)))
    return info


def _top(node: exp.Update | exp.Delete, tr: Translator, scope: Scope) -> None:
    """``UPDATE | DELETE TOP (n)``: n of the rows the WHERE picks, whichever SQLite reads first
    (SQL Server does not say which either): ``WHERE rowid IN (SELECT rowid ... LIMIT n)``."""
    limit = node.args.get("limit")
    if limit is None:
        return
    if node.args.get("from_"):
        raise _errors.unsupported("UPDATE TOP ... FROM")
    tr.expr(limit.expression, scope)
    rows = exp.select(exp.column("rowid")).from_(node.this.copy()).limit(limit.expression.copy())
    where = node.args.get("where")
    if where is not None:
        rows.set("where", where.copy())
    chosen = exp.In(this=exp.column("rowid"), query=exp.Subquery(this=rows))
    node.set("where", exp.Where(this=chosen))
    node.set("limit", None)


def update(node: exp.Update, tr: Translator) -> Plan:
    check_args(
        node, {"this", "expressions", "where", "with_", "returning", "from_", "limit"}, "UPDATE"
    )
    if not node.expressions or not isinstance(node.this, exp.Table):
        raise _errors.syntax_error("SET")
    scope = Scope()
    tr._with(node, scope)
    if node.args.get("from_"):
        info = _update_from(node, tr, scope)
    else:
        info = tr.table(node.this)
        scope.add(
            node.this.alias_or_name, [Column(c.name, c.type, c.nullable) for c in info.columns]
        )
    for assignment in node.expressions:
        if not isinstance(assignment, exp.EQ) or not isinstance(assignment.this, exp.Column):
            raise _errors.unsupported("UPDATE SET of anything but a column")
        column = info.column(assignment.this.name)
        if column is None:
            raise _errors.invalid_column(assignment.this.name)
        if column.identity:
            raise _errors.SqlError(8102, f"Cannot update identity column '{column.name}'.")
        assignment.this.set("table", None)
        _convert_to(assignment.expression, tr.expr(assignment.expression, scope), column.type)
    return _filtered_plan("UPDATE", node, info, tr, scope)


def _filtered_plan(
    verb: str, node: exp.Update | exp.Delete, info: TableInfo, tr: Translator, scope: Scope
) -> Plan:
    """An UPDATE's or DELETE's WHERE, TOP and OUTPUT, then its plan."""
    if node.args.get("where"):
        tr.expr(node.args["where"].this, scope)
    _top(node, tr, scope)
    returned = output(node, info, tr, verb)
    return Plan(verb, (to_sqlite(node),), info, returns=returned)


def delete(node: exp.Delete, tr: Translator) -> Plan:
    check_args(node, {"this", "tables", "where", "with_", "returning", "limit"}, "DELETE")
    scope = Scope()
    tr._with(node, scope)
    tables = node.args.get("tables") or []
    if not node.this and len(tables) == 1:
        node.set("this", tables[0])
        node.set("tables", None)
    elif tables:
        raise _errors.unsupported("DELETE ... FROM with several tables")
    info = tr.table(node.this)
    scope.add(node.this.alias_or_name, [Column(c.name, c.type, c.nullable) for c in info.columns])
    return _filtered_plan("DELETE", node, info, tr, scope)


def truncate(node: exp.Expression, tr: Translator) -> Plan:
    check_args(node, {"expressions"}, "TRUNCATE TABLE")
    if len(node.expressions) != 1:
        raise _errors.unsupported("TRUNCATE TABLE of several tables")
    info = tr.table(node.expressions[0])
    return Plan("TRUNCATE TABLE", (f"DELETE FROM {_quote(info.name)}",), info)
