"""The rows of each catalog view (see _sysviews.py), in the order of the view's columns.

Tables, columns, keys, indexes and defaults come from the SQLite schema (PRAGMA table_info,
index_list, index_info, foreign_key_list) and tdslite's column catalog; other objects from the
providers.  Names of constraints SQLite does not keep are made as SQL Server makes them
(``FK__orders__customer__1A2B3C4D``: table and column cut short plus a hash), stable per name.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ._catalog import ColumnInfo, TableInfo
from ._systypes import (
    COLLATION,
    SYSTEM_TYPES,
    char_length,
    character_set,
    datetime_precision,
    numeric_precision,
    octet_length,
    shape,
)
from ._sysviews import (
    SCHEMAS,
    SYSTEM_DATABASES,
    TYPE_DESC,
    VIEWS,
    CatalogObject,
    Viewer,
    object_id,
    schema_id,
)

Row = tuple[object, ...]
_ACTIONS = {"NO ACTION": 0, "CASCADE": 1, "SET NULL": 2, "SET DEFAULT": 3}


def _hex(text: str) -> str:
    return f"{zlib.crc32(text.lower().encode()):08X}"


@dataclass(frozen=True)
class _Key:
    """A primary key, unique constraint, index or foreign key of a table."""

    name: str
    kind: str  # "PK" | "UQ" | "IX" | "F"
    table: TableInfo
    columns: tuple[str, ...]
    unique: bool = True
    descending: tuple[bool, ...] = ()
    referenced: str | None = None
    referenced_columns: tuple[str, ...] = ()
    on_delete: str = "NO ACTION"
    on_update: str = "NO ACTION"

    @property
    def object_id(self) -> int:
        return object_id("dbo", self.name)


def table_keys(viewer: Viewer, table: TableInfo) -> list[_Key]:
    """The table's keys and indexes: primary key first, then unique constraints and indexes,
    then foreign keys."""
    cache_key = "keys:" + table.name.lower()
    if cache_key in viewer._cache:
        return list(viewer._cache[cache_key])
    info = viewer.pragma(f"PRAGMA table_info({_q(table.name)})")
    pk_columns = tuple(r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
    keys: list[_Key] = []
    if table.pk_name and pk_columns:
        keys.append(
            _Key(table.pk_name, "PK", table, pk_columns, descending=(False,) * len(pk_columns))
        )
    for _seq, name, unique, origin, _partial in reversed(
        viewer.pragma(f"PRAGMA index_list({_q(table.name)})")
    ):
        if origin == "pk":
            continue
        xinfo = [r for r in viewer.pragma(f"PRAGMA index_xinfo({_q(name)})") if r[5]]
        columns = tuple(r[2] for r in xinfo)
        if origin == "u":
            key_name = f"UQ__{table.name[:8]}__{_hex(table.name + ':' + ','.join(columns))}"
            keys.append(_Key(key_name, "UQ", table, columns, descending=(False,) * len(columns)))
        else:
            keys.append(
                _Key(name, "IX", table, columns, bool(unique), tuple(bool(r[3]) for r in xinfo))
            )
    fks: dict[int, list[tuple[object, ...]]] = {}
    for row in viewer.pragma(f"PRAGMA foreign_key_list({_q(table.name)})"):
        fks.setdefault(row[0], []).append(row)
    for _id, rows in sorted(fks.items(), reverse=True):
        rows.sort(key=lambda r: r[1])  # type: ignore[arg-type,return-value]
        parent = str(rows[0][2])
        columns = tuple(str(r[3]) for r in rows)
        targets = tuple(str(r[4]) for r in rows if r[4] is not None)
        if not targets:
            ref_info = viewer.pragma(f"PRAGMA table_info({_q(parent)})")
            targets = tuple(r[1] for r in sorted((r for r in ref_info if r[5]), key=lambda r: r[5]))
        name = (
            f"FK__{table.name[:8]}__{columns[0][:8]}__{_hex(table.name + ':' + ','.join(columns))}"
        )
        keys.append(
            _Key(
                name,
                "F",
                table,
                columns,
                False,
                (),
                parent,
                targets,
                str(rows[0][6]).upper(),
                str(rows[0][5]).upper(),
            )  # fmt: skip
        )
    viewer._cache[cache_key] = keys
    return list(keys)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table(viewer: Viewer, name: str) -> TableInfo | None:
    return next((t for t in viewer.tables if t.name.lower() == name.lower()), None)


def _object_row(viewer: Viewer, name: str, kind: str, parent: int = 0, schema: str = "dbo") -> Row:
    created = viewer.started
    return (
        name, object_id(schema, name), None, schema_id(schema), parent, kind.ljust(2),
        TYPE_DESC.get(kind, kind), created, created, False, False, False,
    )  # fmt: skip


def table_defaults(viewer: Viewer, table: TableInfo) -> list[tuple[str, ColumnInfo, int, str]]:
    """(constraint name, column, column_id, definition) of each DEFAULT of the table."""
    out = []
    info = viewer.pragma(f"PRAGMA table_info({_q(table.name)})")
    for cid, column in enumerate(table.columns, 1):
        row = next((r for r in info if str(r[1]).lower() == column.name.lower()), None)
        if row is None or row[4] is None:
            continue
        name = f"DF__{table.name[:8]}__{column.name[:8]}__{_hex(table.name + ':' + column.name)}"
        out.append((name, column, cid, _definition(str(row[4]))))
    return out


_TDS_CAST = re.compile(r"^\(?\s*tds_cast\((.*),\s*'[^']*',\s*'[^']*'\)\s*\)?$", re.S | re.I)


def _definition(sqlite_default: str) -> str:
    """SQL Server's text of a default: ``((1))`` for a number, ``(N'x')``, ``(sysdatetime())``."""
    match = _TDS_CAST.match(sqlite_default)
    inner = match.group(1).strip() if match else sqlite_default.strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", inner):
        return f"(({inner}))"
    if inner.startswith("'"):
        return f"(N{inner})"
    call = re.fullmatch(r"tds_now\('(\w+)'\)", inner, re.I)
    if call:
        return f"({call.group(1).lower()}())"
    return f"({inner})"


# -- the views --------------------------------------------------------------------------------


def schemas(viewer: Viewer) -> Iterator[Row]:
    for name, fixed_id in SCHEMAS.items():
        yield name, fixed_id, fixed_id
    for obj in viewer.objects("schemas"):
        if obj.name.lower() not in {k.lower() for k in SCHEMAS}:
            yield obj.name, schema_id(obj.name), 1


def _all_objects(viewer: Viewer) -> Iterator[tuple[Row, CatalogObject | None]]:
    for table in viewer.visible_tables():
        table_id = object_id("dbo", table.name)
        yield _object_row(viewer, table.name, "U"), None
        for key in table_keys(viewer, table):
            if key.kind != "IX":
                yield _object_row(viewer, key.name, key.kind, table_id), None
        for name, _column, _cid, _text in table_defaults(viewer, table):
            yield _object_row(viewer, name, "D", table_id), None
    for kind in ("views", "procedures", "functions"):
        for obj in viewer.objects(kind):
            row = _object_row(viewer, obj.name, obj.kind, 0, obj.schema)
            if obj.created is not None:
                row = row[:7] + (obj.created, obj.created) + row[9:]
            yield row, obj


def objects(viewer: Viewer) -> Iterator[Row]:
    for row, _obj in _all_objects(viewer):
        yield row


def tables(viewer: Viewer) -> Iterator[Row]:
    for table in viewer.visible_tables():
        yield _object_row(viewer, table.name, "U") + (
            0, None, len(table.columns), False, True, False, False, False, False, False, 0,
            False, False, 0, "TABLE", False, False, 0, "SCHEMA_AND_DATA", 0,
            "NON_TEMPORAL_TABLE", None, False, False, False, False,
        )  # fmt: skip


def views(viewer: Viewer) -> Iterator[Row]:
    for row, obj in _all_objects(viewer):
        if obj is not None and obj.kind == "V":
            yield row + (False, False, False, False, False, False)


def procedures(viewer: Viewer) -> Iterator[Row]:
    for row, obj in _all_objects(viewer):
        if obj is not None and obj.kind == "P":
            yield row + (False, False, False, False)


def sql_modules(viewer: Viewer) -> Iterator[Row]:
    for row, obj in _all_objects(viewer):
        if obj is not None:
            yield row[1], obj.definition, True, True, False, None


def _column_row(object_id_: int, column_id: int, column: ColumnInfo, default_id: int) -> Row:
    s = shape(column.type)
    return (
        object_id_, column.name, column_id, s.system_type_id, s.system_type_id, s.max_length,
        s.precision, s.scale, s.collation, column.nullable,
        column.type.name in ("char", "varchar", "nchar", "nvarchar", "binary", "varbinary"),
        False, column.identity, False, False, False, False, False, False, False, 0, default_id,
        0, False, False, 0, "NOT_APPLICABLE", False, False,
    )  # fmt: skip


def columns(viewer: Viewer) -> Iterator[Row]:
    for table in viewer.visible_tables():
        table_id = object_id("dbo", table.name)
        defaults = {
            cid: object_id("dbo", name) for name, _c, cid, _t in table_defaults(viewer, table)
        }
        for cid, column in enumerate(table.columns, 1):
            yield _column_row(table_id, cid, column, defaults.get(cid, 0))
    for obj in viewer.objects("views"):
        for cid, column in enumerate(obj.columns, 1):
            yield _column_row(object_id(obj.schema, obj.name), cid, column, 0)


def identity_columns(viewer: Viewer) -> Iterator[Row]:
    for table in viewer.visible_tables():
        for cid, column in enumerate(table.columns, 1):
            if column.identity:
                seq = viewer.pragma(
                    "SELECT seq FROM sqlite_sequence WHERE name = " + _lit(table.name)
                )
                last = seq[0][0] if seq else None
                yield _column_row(object_id("dbo", table.name), cid, column, 0) + (
                    1,
                    1,
                    last,
                    False,
                )


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def types(viewer: Viewer) -> Iterator[Row]:
    for t in SYSTEM_TYPES:
        yield (
            t.name, t.system_type_id, t.user_type_id, 4, None, t.max_length, t.precision, t.scale,
            COLLATION if t.collated else None, t.nullable, False, False, 0, 0, False,
        )  # fmt: skip


def indexes(viewer: Viewer) -> Iterator[Row]:
    for table in viewer.visible_tables():
        table_id = object_id("dbo", table.name)
        keys = [k for k in table_keys(viewer, table) if k.kind != "F"]
        clustered = bool(keys) and keys[0].kind == "PK"
        if not clustered:
            yield (table_id, None, 0, 0, "HEAP", False, 1, False, False, False, 0, False, False,
                   False, False, True, True, False, None)  # fmt: skip
        for index_id, key in enumerate(keys, 1 if clustered else 2):
            kind = 1 if index_id == 1 else 2
            yield (
                table_id, key.name, index_id, kind, "CLUSTERED" if kind == 1 else "NONCLUSTERED",
                key.unique, 1, False, key.kind == "PK", key.kind == "UQ", 0, False, False, False,
                False, True, True, False, None,
            )  # fmt: skip


def index_ids(viewer: Viewer, table: TableInfo) -> list[tuple[int, _Key]]:
    keys = [k for k in table_keys(viewer, table) if k.kind != "F"]
    first = 1 if keys and keys[0].kind == "PK" else 2
    return list(enumerate(keys, first))


def index_columns(viewer: Viewer) -> Iterator[Row]:
    for table in viewer.visible_tables():
        table_id = object_id("dbo", table.name)
        ids = {c.name.lower(): i for i, c in enumerate(table.columns, 1)}
        for index_id, key in index_ids(viewer, table):
            for ordinal, name in enumerate(key.columns, 1):
                desc = key.descending[ordinal - 1] if len(key.descending) >= ordinal else False
                yield (table_id, index_id, ordinal, ids.get(name.lower(), 0), ordinal, 0, desc,
                       False)  # fmt: skip


def key_constraints(viewer: Viewer) -> Iterator[Row]:
    for table in viewer.visible_tables():
        table_id = object_id("dbo", table.name)
        for index_id, key in index_ids(viewer, table):
            if key.kind in ("PK", "UQ"):
                yield _object_row(viewer, key.name, key.kind, table_id) + (
                    index_id,
                    key.kind == "UQ" or key.name == f"PK_{table.name}",
                    True,
                )


def table_foreign_keys(viewer: Viewer) -> Iterator[tuple[TableInfo, _Key, TableInfo]]:
    for table in viewer.visible_tables():
        for key in table_keys(viewer, table):
            parent = _table(viewer, key.referenced or "") if key.kind == "F" else None
            if parent is not None and viewer.may_see(parent.name):
                yield table, key, parent


def foreign_keys(viewer: Viewer) -> Iterator[Row]:
    for table, key, parent in table_foreign_keys(viewer):
        pk = next(
            (
                i
                for i, k in index_ids(viewer, parent)
                if set(k.columns) == set(key.referenced_columns)
            ),
            1,
        )
        yield _object_row(viewer, key.name, "F", object_id("dbo", table.name)) + (
            object_id("dbo", parent.name), pk, False, False, False,
            _ACTIONS.get(key.on_delete, 0), key.on_delete.replace(" ", "_"),
            _ACTIONS.get(key.on_update, 0), key.on_update.replace(" ", "_"), True,
        )  # fmt: skip


def foreign_key_columns(viewer: Viewer) -> Iterator[Row]:
    for table, key, parent in table_foreign_keys(viewer):
        mine = {c.name.lower(): i for i, c in enumerate(table.columns, 1)}
        theirs = {c.name.lower(): i for i, c in enumerate(parent.columns, 1)}
        for n, (col, ref) in enumerate(zip(key.columns, key.referenced_columns, strict=False), 1):
            yield (key.object_id, n, object_id("dbo", table.name), mine.get(col.lower(), 0),
                   object_id("dbo", parent.name), theirs.get(ref.lower(), 0))  # fmt: skip


def default_constraints(viewer: Viewer) -> Iterator[Row]:
    for table in viewer.visible_tables():
        for name, _column, cid, text in table_defaults(viewer, table):
            yield _object_row(viewer, name, "D", object_id("dbo", table.name)) + (cid, text, True)


def extended_properties(viewer: Viewer) -> Iterator[Row]:
    """None: tdslite has no sp_addextendedproperty (Kysely's introspector joins this view)."""
    return iter(())


def databases(viewer: Viewer) -> Iterator[Row]:
    names = dict(SYSTEM_DATABASES)
    names[viewer.served] = 5
    for name, database_id in names.items():
        yield (name, database_id, None, viewer.started, 160, COLLATION, 0, "MULTI_USER", False,
               0, "ONLINE", 3, "SIMPLE")  # fmt: skip


def database_id(viewer: Viewer) -> int:
    if viewer.in_served:
        return 5
    return SYSTEM_DATABASES.get(viewer.database.lower(), 1)


def dm_exec_sessions(viewer: Viewer) -> Iterator[Row]:
    s = viewer.session
    login_time = s.get("login_time", viewer.started)
    yield (
        s.get("session_id"), login_time, s.get("host_name"), s.get("program_name"),
        s.get("host_process_id"), s.get("client_version"), s.get("client_interface_name"),
        s.get("login_name"), "running", 0, 0, 0, login_time, login_time, 0, 0, 0, True,
        2147483647, "us_english", "mdy", 7, True, True, True, False, True, True, True, True,
        s.get("transaction_isolation_level", 2),
        -1, 0, s.get("row_count", 0), 0, s.get("login_name"), database_id(viewer),
        s.get("open_transaction_count", 0),
    )  # fmt: skip


def dm_exec_connections(viewer: Viewer) -> Iterator[Row]:
    s = viewer.session
    connect = s.get("login_time", viewer.started)
    yield (
        s.get("session_id"), s.get("session_id"), connect, "TCP", "TSQL",
        s.get("protocol_version"), 4, s.get("encrypt_option", "FALSE"), "SQL", 0, 0, 0, connect,
        connect, s.get("net_packet_size", 4096), s.get("client_net_address"),
        s.get("client_tcp_port"), s.get("local_net_address"), s.get("local_tcp_port"),
        s.get("connection_id"), None,
    )  # fmt: skip


# -- INFORMATION_SCHEMA -----------------------------------------------------------------------


def is_tables(viewer: Viewer) -> Iterator[Row]:
    db = viewer.database
    for table in viewer.visible_tables():
        yield db, "dbo", table.name, "BASE TABLE"
    for obj in viewer.objects("views"):
        yield db, obj.schema, obj.name, "VIEW"


def is_columns(viewer: Viewer) -> Iterator[Row]:
    db = viewer.database
    sources: list[tuple[str, str, tuple[ColumnInfo, ...], dict[int, str]]] = []
    for table in viewer.visible_tables():
        defaults = {cid: text for _n, _c, cid, text in table_defaults(viewer, table)}
        sources.append(("dbo", table.name, table.columns, defaults))
    for obj in viewer.objects("views"):
        sources.append((obj.schema, obj.name, obj.columns, {}))
    for schema, name, cols, defaults in sources:
        for position, column in enumerate(cols, 1):
            t = column.type
            precision, radix, scale = numeric_precision(t)
            charset = character_set(t)
            yield (
                db, schema, name, column.name, position, defaults.get(position),
                "YES" if column.nullable else "NO", t.name, char_length(t), octet_length(t),
                precision, radix, scale, datetime_precision(t), None, None, charset, None, None,
                COLLATION if charset else None, None, None, None,
            )  # fmt: skip


def is_views(viewer: Viewer) -> Iterator[Row]:
    for obj in viewer.objects("views"):
        text = obj.definition[:4000] if obj.definition else None
        yield viewer.database, obj.schema, obj.name, text, "NONE", "NO"


def is_routines(viewer: Viewer) -> Iterator[Row]:
    db = viewer.database
    for kind, routine in (("procedures", "PROCEDURE"), ("functions", "FUNCTION")):
        for obj in viewer.objects(kind):
            created = obj.created or viewer.started
            text = obj.definition[:4000] if obj.definition else None
            access = "MODIFIES" if routine == "PROCEDURE" else "READS"
            yield (db, obj.schema, obj.name, db, obj.schema, obj.name, routine, None, "SQL", text,
                   "NO", access, created, created)  # fmt: skip


_CONSTRAINT_TYPES = {"PK": "PRIMARY KEY", "UQ": "UNIQUE", "F": "FOREIGN KEY"}


def is_table_constraints(viewer: Viewer) -> Iterator[Row]:
    db = viewer.database
    for table in viewer.visible_tables():
        for key in table_keys(viewer, table):
            if key.kind in _CONSTRAINT_TYPES:
                yield (db, "dbo", key.name, db, "dbo", table.name, _CONSTRAINT_TYPES[key.kind],
                       "NO", "NO")  # fmt: skip


def is_key_column_usage(viewer: Viewer) -> Iterator[Row]:
    db = viewer.database
    for table in viewer.visible_tables():
        for key in table_keys(viewer, table):
            if key.kind in _CONSTRAINT_TYPES:
                for position, column in enumerate(key.columns, 1):
                    yield db, "dbo", key.name, db, "dbo", table.name, column, position


def is_referential_constraints(viewer: Viewer) -> Iterator[Row]:
    db = viewer.database
    for _table_info, key, parent in table_foreign_keys(viewer):
        target = next(
            (k for k in table_keys(viewer, parent)
             if k.kind in ("PK", "UQ") and set(k.columns) == set(key.referenced_columns)),
            None,
        )  # fmt: skip
        yield (db, "dbo", key.name, db, "dbo", target.name if target else None, "SIMPLE",
               key.on_update, key.on_delete)  # fmt: skip


BUILDERS: dict[str, Callable[[Viewer], Iterator[Row]]] = {
    "sys.schemas": schemas, "sys.objects": objects, "sys.tables": tables, "sys.views": views,
    "sys.procedures": procedures, "sys.sql_modules": sql_modules, "sys.columns": columns,
    "sys.identity_columns": identity_columns, "sys.types": types, "sys.indexes": indexes,
    "sys.index_columns": index_columns, "sys.key_constraints": key_constraints,
    "sys.foreign_keys": foreign_keys, "sys.foreign_key_columns": foreign_key_columns,
    "sys.default_constraints": default_constraints, "sys.databases": databases,
    "sys.extended_properties": extended_properties,
    "sys.dm_exec_sessions": dm_exec_sessions, "sys.dm_exec_connections": dm_exec_connections,
    "information_schema.tables": is_tables, "information_schema.columns": is_columns,
    "information_schema.views": is_views, "information_schema.routines": is_routines,
    "information_schema.table_constraints": is_table_constraints,
    "information_schema.key_column_usage": is_key_column_usage,
    "information_schema.referential_constraints": is_referential_constraints,
}  # fmt: skip


def build(name: str, viewer: Viewer) -> str:
    """The rows of catalog view ``name`` for ``viewer``, as the JSON ``tds_sysview`` returns."""
    rows: Iterator[tuple[object, ...]] = BUILDERS[name](viewer)
    width = len(VIEWS[name])
    out = []
    for row in rows:
        assert len(row) == width, (name, row)
        out.append([_storage(v) for v in row])
    return json.dumps(out, separators=(",", ":"))


def _storage(value: object) -> object:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f") + "0"
    return value
