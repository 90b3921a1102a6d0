"""Schema objects beyond tables: the object registry, schemas, views, temporary tables
(``#t`` per session, ``##t`` global) and table variables (``DECLARE @t TABLE``).

The registry is the SQLite table ``__tds_objects`` (one row per schema, view and procedure;
temporary procedures live in their session only), so a catalog can list them:

========== ===============================================================================
column     meaning
========== ===============================================================================
schema     the schema (``dbo``, ``sales``, ...; for a SCHEMA row its own name)
name       the object's name (for a SCHEMA row its own name)
type       ``SCHEMA`` | ``VIEW`` | ``PROCEDURE``
definition the CREATE statement as the client wrote it (ALTER stores it as CREATE)
parameters procedures: JSON list of ``{"name": "@a", "type": "int", "default": "1" | null,
           "output": false}`` in declaration order; ``[]`` otherwise
body       procedures: the statements after ``AS``; views: the SELECT
========== ===============================================================================

A view is also a SQLite view (named ``v``, or ``sales.v`` outside dbo) over the translated
SELECT, and its columns are recorded in ``__tds_columns`` like a table's, so queries resolve it
as a table; reading it uses ownership chaining (`_perms.Authorizer`). Temporary tables live in
SQLite's per-connection ``temp`` schema (``#t``; gone when the connection closes) or in the main
database (``##t``, dropped when the session that made it ends). Table variables are temp tables
named ``@t~N``, dropped when their batch or procedure ends and kept through ROLLBACK.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlglot import exp

from . import _errors, _statements
from ._batch import Statement, module_kind, parse_statement, tokenize, word
from ._catalog import ColumnInfo, TableInfo, forget_table, is_internal, make_table, record_table
from ._state import ObjectRow, SessionView, Variable
from ._translate import Translator, is_unknown, object_name, to_sqlite
from ._types import SqlType
from ._typing import guess_type

OBJECTS_TABLE = "__tds_objects"
CREATE_OBJECTS = f"""
CREATE TABLE IF NOT EXISTS {OBJECTS_TABLE} (
    schema TEXT NOT NULL COLLATE NOCASE,
    name TEXT NOT NULL COLLATE NOCASE,
    type TEXT NOT NULL,
    definition TEXT NOT NULL,
    parameters TEXT NOT NULL DEFAULT '[]',
    body TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (schema, name, type)
)"""


# -- the registry ------------------------------------------------------------------------------


def split_name(name: str) -> tuple[str, str]:
    """``sales.v`` -> (sales, v); ``v`` -> (dbo, v)."""
    schema, _, short = name.rpartition(".")
    return (schema or "dbo"), short


def lookup(session: SessionView, name: str, kind: str | None = None) -> ObjectRow | None:
    """The registry row of ``name`` (T-SQL spelling, ``sales.v`` or ``v``), of ``kind``."""
    if name.startswith("#"):
        row = session.objects.temp_procedures.get(name.lower())
        return row if kind in (None, "PROCEDURE") else None
    schema, short = split_name(name)
    found = session._conn_internal().execute(
        f"SELECT schema, name, type, definition, parameters, body FROM {OBJECTS_TABLE} "
        "WHERE schema = ? AND name = ? AND type != 'SCHEMA'",
        (schema, short),
    )
    rows = found.fetchall()
    for row in rows:
        if kind is None or row[2] == kind:
            return ObjectRow(row[0], row[1], row[2], row[3], tuple(json.loads(row[4])), row[5])
    return None


def schema_exists(session: SessionView, schema: str) -> bool:
    if schema.lower() == "dbo":
        return True
    found = session._conn_internal().execute(
        f"SELECT 1 FROM {OBJECTS_TABLE} WHERE type = 'SCHEMA' AND schema = ?", (schema,)
    )
    return found.fetchone() is not None


def record(session: SessionView, row: ObjectRow) -> None:
    if row.type == "PROCEDURE":
        session._engine.procedure_names.add(row.name.lower())  # before it can be seen
    with session._authorizer.internal():
        session._conn.execute(
            f"INSERT INTO {OBJECTS_TABLE} (schema, name, type, definition, parameters, body) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (row.schema, row.name, row.type, row.definition, json.dumps(row.parameters), row.body),
        )


def forget(session: SessionView, row: ObjectRow) -> None:
    with session._authorizer.internal():
        session._conn.execute(
            f"DELETE FROM {OBJECTS_TABLE} WHERE schema = ? AND name = ? AND type = ?",
            (row.schema, row.name, row.type),
        )


def exists(session: SessionView, name: str) -> bool:
    """Is ``name`` taken by a table, view or procedure (one namespace per schema)?"""
    session._catalog.refresh(session._conn_internal())
    return session._catalog.table(name) is not None or lookup(session, name) is not None


@contextmanager
def ddl(session: SessionView, verb: str) -> Iterator[None]:
    """Run DDL atomically (a savepoint), mapping SQLite failures to SQL Server errors."""
    session._finish_rows()
    conn = session._conn
    conn.execute("SAVEPOINT tds_obj")
    try:
        yield
    except sqlite3.Error as exc:
        conn.execute("ROLLBACK TO tds_obj")
        conn.execute("RELEASE tds_obj")
        if "parameters are not allowed in views" in str(exc):
            raise _errors.unsupported("variables or @@functions in a view") from None
        raise session._map(exc, verb, None) from None
    except BaseException:
        conn.execute("ROLLBACK TO tds_obj")
        conn.execute("RELEASE tds_obj")
        raise
    conn.execute("RELEASE tds_obj")
    session._catalog.invalidate()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# -- module statements (CREATE/ALTER VIEW|PROCEDURE), routed here by keyword ------------------


def is_module(statement: Statement) -> bool:
    return statement.keyword in ("CREATE", "ALTER") and (
        module_kind(list(statement.words[:4])) is not None
    )


def module_header(
    statement: Statement,
) -> tuple[str, bool, bool, str, int, list[Any], str | None]:
    """(kind, is CREATE, OR ALTER, T-SQL name, index of the first token after the name,
    tokens, database of a three-part name) of a CREATE/ALTER VIEW|PROCEDURE statement."""
    tokens = tokenize(statement.text)
    words = [word(tokens, i) for i in range(len(tokens))]
    create = words[0] == "CREATE"
    or_alter = words[1:3] == ["OR", "ALTER"]
    index = 3 if or_alter else 1
    kind = "VIEW" if words[index] == "VIEW" else "PROCEDURE"
    index += 1
    parts: list[str] = []
    prefix = ""
    while index < len(tokens):
        token = tokens[index]
        if token.token_type.name == "HASH" and not parts:
            prefix += "#"
        elif token.token_type.name == "DOT":
            parts.append("") if not parts else None
        else:
            parts.append(prefix + token.text)
            prefix = ""
            if index + 1 < len(tokens) and tokens[index + 1].token_type.name == "DOT":
                index += 2
                continue
            index += 1
            break
        index += 1
    parts = [p for p in parts if p]
    if not parts:
        raise _errors.syntax_error(statement.words[-1] if statement.words else "")
    catalog = parts[-3] if len(parts) >= 3 else None
    parts = parts[-2:]
    name = parts[-1] if len(parts) == 1 or parts[0].lower() == "dbo" else ".".join(parts)
    return kind, create, or_alter, name, index, tokens, catalog


def _check_ddl(session: SessionView, what: str) -> None:
    if not session.principal.may_ddl:
        raise _errors.ddl_denied(what, session.database)


def create_view(
    session: SessionView,
    statement: Statement,
    name: str,
    index: int,
    tokens: list[Any],
    *,
    create: bool,
    or_alter: bool,
) -> None:
    _check_ddl(session, "CREATE VIEW")
    schema, short = split_name(name)
    if not schema_exists(session, schema):
        raise _invalid_schema(schema)
    if word(tokens, index) != "AS":
        raise _errors.unsupported("view options or column lists (CREATE VIEW v (a, b) / WITH)")
    body = statement.text[tokens[index].end + 1 :].strip()
    from ._batch import split_batch

    pieces = split_batch(body)
    if len(pieces) != 1 or pieces[0].keyword not in ("SELECT", "WITH", "("):
        raise _errors.SqlError(
            111, "'CREATE VIEW' must be the only statement in the batch.", severity=15
        )
    tree = parse_statement(pieces[0].sql, pieces[0].words).copy()
    if tree.args.get("into"):
        raise _errors.syntax_error("INTO")
    session._catalog.refresh(session._conn_internal())
    existing = lookup(session, name, "VIEW")
    if not create and existing is None:
        raise _errors.invalid_object(name)
    if existing is None and exists(session, name):
        raise _errors.already_exists(short)
    if existing is not None and create and not or_alter:
        raise _errors.already_exists(short)
    tr = Translator(session._context_for({}))
    columns = tr.query(tree, None)
    seen: set[str] = set()
    for number, column in enumerate(columns, 1):
        if not column.name:
            raise _errors.SqlError(
                4511,
                "Create View or Function failed because no column name was specified for "
                f"column {number}.",
            )
        if column.name.lower() in seen:
            raise _errors.SqlError(
                4506,
                f"Column names in each view or function must be unique. Column name "
                f"'{column.name}' in view or function '{short}' is specified more than once.",
            )
        seen.add(column.name.lower())
    select_sql = to_sqlite(tree)
    sqlite_name = short if schema.lower() == "dbo" else f"{schema}.{short}"
    with ddl(session, "CREATE VIEW"):
        if existing is not None:
            with session._authorizer.internal():
                session._conn.execute(f"DROP VIEW {_quote(sqlite_name)}")
                forget_table(session._conn, sqlite_name)
            forget(session, existing)
        with session._authorizer.internal():
            session._conn.execute(f"CREATE VIEW {_quote(sqlite_name)} AS {select_sql}")
            first = session._conn.execute(f"SELECT * FROM {_quote(sqlite_name)} LIMIT 1")
            sample = first.fetchone()
        infos = [
            ColumnInfo(
                c.name,
                (guess_type(sample[i] if sample else None) if is_unknown(c.type) else c.type),
                True,
            )
            for i, c in enumerate(columns)
        ]
        with session._authorizer.internal():
            record_table(session._conn, make_table(sqlite_name, infos, None))
        definition = statement.text if create and not or_alter else _as_create(statement.text)
        record(session, ObjectRow(schema, short, "VIEW", definition, (), body))


def _as_create(text: str) -> str:
    """The definition of an ALTER / CREATE OR ALTER, stored as the CREATE it amounts to."""
    tokens = tokenize(text)
    words = [word(tokens, i) for i in range(len(tokens))]
    cut = 3 if words[1:3] == ["OR", "ALTER"] else 1
    return "CREATE " + text[tokens[cut].start :]


def _invalid_schema(schema: str) -> _errors.SqlError:
    return _errors.SqlError(
        2760,
        f'The specified schema name "{schema}" either does not exist or you do not have '
        "permission to use it.",
    )


# -- statements parsed by sqlglot: CREATE SCHEMA, DROP VIEW|PROCEDURE, DROP TABLE of a view ----


def handles(tree: exp.Expression) -> bool:
    """Is this parsed statement one of ours (see `run_tree`)?"""
    if isinstance(tree, exp.Create):
        return str(tree.args.get("kind") or "").upper() == "SCHEMA"
    if isinstance(tree, exp.Drop):
        return str(tree.args.get("kind") or "").upper() in ("VIEW", "PROCEDURE", "PROC", "SCHEMA")
    return False


def run_tree(session: SessionView, tree: exp.Expression) -> None:
    """CREATE SCHEMA, DROP VIEW|PROCEDURE [IF EXISTS] a, b."""
    kind = str(tree.args.get("kind") or "").upper()
    if isinstance(tree, exp.Create):
        _create_schema(session, tree)
        return
    if kind == "SCHEMA":
        raise _errors.unsupported("DROP SCHEMA")
    noun = "view" if kind == "VIEW" else "procedure"
    wanted = "VIEW" if kind == "VIEW" else "PROCEDURE"
    for table in tree.args.get("tables") or [tree.this]:
        name = object_name(table) if isinstance(table, exp.Table) else table.name
        if table.catalog and table.catalog.lower() != session.database.lower():
            raise _errors.unsupported("a three-part name of another database")
        row = lookup(session, name, wanted)
        if row is None or not (session.principal.may_ddl or name.startswith("#")):
            if tree.args.get("exists") and row is None:
                continue
            raise _errors.SqlError(
                3701,
                f"Cannot drop the {noun} '{name}', because it does not exist or you do not "
                "have permission.",
                severity=11,
            )
        if name.startswith("#"):
            session.objects.temp_procedures.pop(name.lower(), None)
            continue
        with ddl(session, f"DROP {wanted}"):
            if wanted == "VIEW":
                sqlite_name = (
                    row.name if row.schema.lower() == "dbo" else f"{row.schema}.{row.name}"
                )
                with session._authorizer.internal():  # the admin check was made above
                    session._conn.execute(f"DROP VIEW {_quote(sqlite_name)}")
                    forget_table(session._conn, sqlite_name)
            forget(session, row)


def _create_schema(session: SessionView, tree: exp.Create) -> None:
    table = tree.this
    name = table.db if isinstance(table, exp.Table) else ""
    if not name or any(v for k, v in tree.args.items() if k not in ("this", "kind")):
        raise _errors.unsupported("CREATE SCHEMA with options")
    _check_ddl(session, "CREATE SCHEMA")
    if schema_exists(session, name) or name.lower() in ("sys", "information_schema", "guest"):
        raise _errors.already_exists(name)
    with ddl(session, "CREATE SCHEMA"):
        record(session, ObjectRow(name, name, "SCHEMA", f"CREATE SCHEMA {name}"))


# -- tables: CREATE TABLE checks, SELECT ... INTO, temporary tables, table variables --------


def check_create_table(session: SessionView, table: exp.Table) -> str:
    """Who may create this table and where: the T-SQL name (``t``, ``sales.t``, ``#t``...).

    Raises:
        SqlError: 262 without CREATE TABLE permission (temporary tables need none), 2760 for a
            schema that does not exist, 2714 when the name is taken.
    """
    name = object_name(table)
    if table.catalog and table.catalog.lower() != session.database.lower():
        raise _errors.invalid_object(table.sql("tsql"))
    if name.startswith("#"):
        refuse_read_only(session)
    else:
        session.principal.check(
            verb="CREATE TABLE", reads=set(), writes=set(), database=session.database
        )
    schema, short = split_name(name)
    if "." in name and not schema_exists(session, schema):
        raise _invalid_schema(schema)
    if is_internal(short) or exists(session, name):
        raise _errors.already_exists(name)
    return name


def created(session: SessionView, info: TableInfo) -> None:
    """Bookkeeping after a CREATE TABLE ran (inside its savepoint)."""
    lowered = info.name.lower()
    if lowered.startswith("#") and not lowered.startswith("##"):
        session._catalog.temp[lowered] = info  # session-scoped: never in __tds_columns
        return
    if lowered.startswith("##"):
        session.objects.global_temps.add(info.name)
    with session._authorizer.internal():
        record_table(session._conn, info)


def select_into(session: SessionView, tree: exp.Select, tr: Translator) -> _statements.Plan:
    """``SELECT ... INTO t FROM ...``: a new table with the SELECT's columns, then its rows."""
    into = tree.args["into"]
    target = into.this
    if not isinstance(target, exp.Table) or isinstance(target.this, exp.Parameter):
        raise _errors.syntax_error("INTO")
    name = check_create_table(session, target)
    tree.set("into", None)
    columns = tr.query(tree, None)
    infos: list[ColumnInfo] = []
    for number, column in enumerate(columns, 1):
        if not column.name:
            raise _errors.SqlError(
                1038,
                f"An object or column name is missing or empty (column {number} of SELECT "
                "INTO). Give it an alias.",
                severity=15,
            )
        sql_type = SqlType("nvarchar", length=-1) if is_unknown(column.type) else column.type
        infos.append(ColumnInfo(column.name, sql_type, True))
    plan = _statements.create_plan(name, infos)
    names = ", ".join(_quote(c.name) for c in infos)
    insert = f"INSERT INTO {_quote(plan.table.name)} ({names}) {to_sqlite(tree)}"  # type: ignore[union-attr]
    return _statements.Plan("SELECT INTO", (*plan.sql, insert), plan.table)


def declare_table(
    session: SessionView, name: str, schema: exp.Schema, variables: dict[str, Variable]
) -> None:
    """``DECLARE @t TABLE (...)``: a temp table named ``@t~N`` for this batch or procedure."""
    key = "@" + name.lower()
    if key in variables:
        raise _errors.redeclared_variable("@" + name)
    refuse_read_only(session)
    objects = session.objects
    objects.variable_ids += 1
    sqlite_name = f"@{name}~{objects.variable_ids}"
    create = exp.Create(
        this=exp.Schema(
            this=exp.Table(this=exp.to_identifier(sqlite_name, quoted=True)),
            expressions=[e.copy() for e in schema.expressions],
        ),
        kind="TABLE",
    )
    session._catalog.refresh(session._conn_internal())
    tr = Translator(session._context_for(variables))
    plan = _statements.create_table(create, tr, temp=True)
    assert plan.table is not None
    try:
        with session._authorizer.internal():
            for sql in plan.sql:
                session._conn.execute(sql)
    except sqlite3.Error as exc:
        raise session._map(exc, "DECLARE", None) from None
    objects.table_variables[plan.table.name] = (plan.table, plan.sql)
    variables[key] = Variable(SqlType("int"), plan.table.name)


def bind_table_variables(session: SessionView, variables: dict[str, Variable]) -> None:
    """Make the scope's table variables visible to the translator (``FROM @t``)."""
    live = session.objects.table_variables
    if not live and not session._catalog.table_variables:
        return  # the common case: no table variables at all
    session._catalog.table_variables = {
        key: live[str(v.value)][0]
        for key, v in variables.items()
        if key.startswith("@") and str(v.value) in live
    }


def drop_table_variables(session: SessionView, variables: dict[str, Variable]) -> None:
    """The end of a batch or procedure: its table variables go."""
    live = session.objects.table_variables
    for key, variable in list(variables.items()):
        if key.startswith("@") and str(variable.value) in live:
            info, _ = live.pop(str(variable.value))
            try:
                with session._authorizer.internal():
                    session._conn.execute(f"DROP TABLE IF EXISTS temp.{_quote(info.name)}")
            except sqlite3.Error:
                pass  # the connection is going away or busy: the temp schema dies with it


@contextmanager
def table_variables_survive(session: SessionView) -> Iterator[None]:
    """Around a ROLLBACK: table variables keep their rows, as in SQL Server."""
    live = session.objects.table_variables
    saved = []
    with session._authorizer.internal():
        for info, sql in live.values():
            rows = session._conn.execute(f"SELECT * FROM temp.{_quote(info.name)}").fetchall()
            saved.append((info, sql, rows))
    yield
    with session._authorizer.internal():
        for info, sql, rows in saved:
            table = f"temp.{_quote(info.name)}"
            if (
                session._conn.execute(
                    "SELECT 1 FROM temp.sqlite_master WHERE name = ?", (info.name,)
                ).fetchone()
                is None
            ):
                for statement in sql:
                    session._conn.execute(statement)
            session._conn.execute(f"DELETE FROM {table}")
            if rows:
                marks = ", ".join("?" * len(rows[0]))
                session._conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)


def reset(session: SessionView, *, rolled_back: bool = False) -> None:
    """RESETCONNECTION / sp_reset_connection: the session's #tables and #procedures go.

    ``rolled_back``: the reset rolled a transaction back just before. Without one and without
    #tables there is nothing to drop and nothing the catalog as read misses (the next statement
    re-reads it if the schema changed, as always), so the catalog is left as it is: re-reading
    it costs more than the rest of the reset on a database with many tables, and a pooling
    client resets before every query.
    """
    session.objects.temp_procedures.clear()
    session._cancel_requested = False  # a reset is a request of its own
    if not session._catalog.temp and not rolled_back:
        return
    session._catalog.refresh(session._conn_internal())
    with session._authorizer.internal():
        for info in list(session._catalog.temp.values()):
            session._conn.execute(f"DROP TABLE IF EXISTS temp.{_quote(info.name)}")
    session._catalog.temp.clear()
    session._catalog.invalidate()


def close(session: SessionView) -> None:
    """The session ends: its ##tables go (its #tables go with its SQLite connection)."""
    for name in sorted(session.objects.global_temps):
        try:
            with session._authorizer.internal():
                session._conn.execute(f"DROP TABLE IF EXISTS main.{_quote(name)}")
                forget_table(session._conn, name)
        except sqlite3.Error:
            pass  # another session holds a lock: the table outlives us (as with a crash)
    session.objects.global_temps.clear()


def refuse_read_only(session: SessionView) -> None:
    """A login that can never write has a read-only SQLite connection (its third guard):
    SQLite refuses temporary tables there too, so say so clearly (fail closed)."""
    if session._conn_internal().execute("PRAGMA query_only").fetchone()[0]:
        raise _errors.SqlError(
            3906,
            'Failed to update database "tempdb" because the database is read-only (tdslite '
            "gives a login that can never write a read-only connection; temporary tables and "
            "table variables need a read-write login).",
        )


def temporary_ddl(sql: str) -> bool:
    """Is this SQLite statement our DDL for a temporary table (#t, ##t, @t) or its seed?"""
    return (
        sql.startswith(
            ("CREATE TEMP TABLE ", 'CREATE TABLE "##', 'DROP TABLE "#')
            + ("INSERT INTO temp.sqlite_sequence ",)
        )
        or (sql.startswith("INSERT INTO sqlite_sequence ") and "VALUES ('##" in sql)
        or (sql.startswith(("CREATE INDEX ", "CREATE UNIQUE INDEX ")) and ' ON "#' in sql)
    )


def dropped_tables(session: SessionView, tree: exp.Drop) -> set[str]:
    """The tables a DROP TABLE names (T-SQL spelling); 3705 for a view."""
    names: set[str] = set()
    for table in tree.args.get("tables") or [tree.this]:
        if not isinstance(table, exp.Table):
            continue
        name = object_name(table)
        if not name.startswith("#") and lookup(session, name, "VIEW") is not None:
            raise _errors.SqlError(
                3705,
                f"Cannot use DROP TABLE with '{name}' because '{name}' is a view. Use DROP VIEW.",
            )
        names.add(name.lower())
    return names
