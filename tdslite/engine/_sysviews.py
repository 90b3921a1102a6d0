"""Catalog views: sys.* and INFORMATION_SCHEMA.* built from the SQLite schema for one caller.

How a query over a catalog view runs:

1. The translator meets ``sys.tables`` (or ``INFORMATION_SCHEMA.COLUMNS``, ...) as a row source and
   replaces it by ``(SELECT json_extract(value, '$[0]') AS object_id, ... FROM
   json_each(tds_sysview('sys.tables')))``, typed with the view's SQL Server columns (`VIEWS`).
   The statement's translation stays cacheable: it holds no rows.
2. Before the statement runs, the session builds each view's rows for the caller
   (`_sysrows.build`) and hands them to the SQLite function ``tds_sysview`` as JSON.
3. Metadata visibility, as SQL Server: rows only for objects the caller holds some permission on
   (a table it may SELECT, the constraints, indexes and columns of such tables), the caller's own
   session in sys.dm_exec_sessions / sys.dm_exec_connections; types, schemas and databases are
   public.  A view the session did not build has no rows (fail closed).

Objects that are not tables (views, procedures, functions, extra schemas) come from providers:
``Engine.catalog_providers[kind]`` is a function ``(Viewer) -> Iterable[CatalogObject]`` per
object kind (see `PROVIDER_KINDS`); it must return only what ``viewer.may_see`` allows, and its
objects then appear in sys.objects, sys.views / sys.procedures, sys.sql_modules, sys.columns (a
view's columns), INFORMATION_SCHEMA.TABLES/VIEWS/ROUTINES/COLUMNS.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp

from . import _errors
from ._catalog import ColumnInfo, TableInfo
from ._types import Column, SqlType

#: Object kinds a provider can supply: sys.objects ``type`` codes they appear as.
PROVIDER_KINDS = {
    "views": "V",
    "procedures": "P",
    "functions": "FN",
    "schemas": "",
}
TYPE_DESC = {
    "U": "USER_TABLE", "V": "VIEW", "P": "SQL_STORED_PROCEDURE", "FN": "SQL_SCALAR_FUNCTION",
    "IF": "SQL_INLINE_TABLE_VALUED_FUNCTION", "TF": "SQL_TABLE_VALUED_FUNCTION",
    "PK": "PRIMARY_KEY_CONSTRAINT", "UQ": "UNIQUE_CONSTRAINT", "F": "FOREIGN_KEY_CONSTRAINT",
    "D": "DEFAULT_CONSTRAINT", "S": "SYSTEM_TABLE", "IT": "INTERNAL_TABLE",
}  # fmt: skip
#: Fixed schemas of every database (name -> schema_id).
SCHEMAS = {"dbo": 1, "guest": 2, "INFORMATION_SCHEMA": 3, "sys": 4}
#: Databases every login sees in sys.databases (the served one gets id 5).
SYSTEM_DATABASES = {"master": 1, "tempdb": 2, "model": 3, "msdb": 4}


@dataclass(frozen=True)
class CatalogObject:
    """An object a provider contributes (a view, a procedure, a function, a schema).

    Attributes:
        name: the object's name.
        kind: sys.objects type code: "V", "P", "FN", "IF", "TF"; "" for a schema.
        schema: the schema it lives in.
        columns: a view's (or table-valued function's) result columns.
        definition: the T-SQL text (sys.sql_modules.definition, VIEW_DEFINITION, ...).
        created: creation time (sys.objects.create_date); None: the engine's start.
    """

    name: str
    kind: str
    schema: str = "dbo"
    columns: tuple[ColumnInfo, ...] = ()
    definition: str | None = None
    created: dt.datetime | None = None


@dataclass
class Viewer:
    """Everything the row builders know about the caller.

    Attributes:
        database: the database in use (DB_NAME()); "master" shows no user objects.
        served: the database the engine serves (its id is 5).
        tables: the tables of the served database.
        may_see: may the caller see the table/object of this name (some permission on it)?
        pragma: runs an internal (unchecked) PRAGMA on the session's connection.
        session: dm_exec_sessions / dm_exec_connections facts of the caller's own session.
        providers: kind -> provider (see the module docstring).
        started: the engine's start time (create_date of objects without one).
    """

    database: str
    served: str
    tables: list[TableInfo]
    may_see: Callable[[str], bool]
    pragma: Callable[[str], list[tuple[Any, ...]]]
    session: Mapping[str, object]
    providers: Mapping[str, Callable[[Viewer], Iterable[CatalogObject]]]
    started: dt.datetime
    _cache: dict[str, Any] = field(default_factory=dict)

    @property
    def in_served(self) -> bool:
        return self.database.lower() == self.served.lower()

    def visible_tables(self) -> list[TableInfo]:
        """The user tables the caller may see (not views, temporary tables, table variables)."""
        if not self.in_served:
            return []
        views = {_qualified(v.schema, v.name) for v in self.objects("views")}
        return [
            t
            for t in self.tables
            if self.may_see(t.name) and t.name[:1] not in "#@" and t.name.lower() not in views
        ]

    def objects(self, kind: str) -> list[CatalogObject]:
        """What the provider of ``kind`` returns, kept for the statement; fail closed."""
        if kind not in self._cache:
            provider = self.providers.get(kind)
            try:
                found = list(provider(self)) if provider is not None and self.in_served else []
            except Exception as exc:  # fail closed: no rows that could not be checked
                raise _errors.SqlError(
                    50000,
                    f"The catalog could not list {kind} ({type(exc).__name__}); "
                    "the catalog view returns nothing.",
                ) from exc
            self._cache[kind] = [o for o in found if o.kind == "" or self.may_see(o.name)]
        return list(self._cache[kind])


def schema_id(schema: str) -> int:
    """The schema_id of a schema: the fixed ones', else a stable number from its name."""
    fixed = {k.lower(): v for k, v in SCHEMAS.items()}.get(schema.lower())
    return fixed if fixed is not None else 5 + zlib.crc32(schema.lower().encode()) % 60000


def _qualified(schema: str, name: str) -> str:
    return (name if schema.lower() == "dbo" else f"{schema}.{name}").lower()


def registry_provider(kind: str) -> CatalogProvider:
    """A provider over the engine's object registry (``__tds_objects``, see _objects.py) for
    ``kind`` ("views", "procedures" or "schemas"): views get their columns from the catalog."""
    registry_type = {"views": "VIEW", "procedures": "PROCEDURE", "schemas": "SCHEMA"}[kind]

    def provider(viewer: Viewer) -> Iterator[CatalogObject]:
        rows = viewer.pragma(
            "SELECT schema, name, definition FROM __tds_objects "
            f"WHERE type = '{registry_type}' ORDER BY schema, name"
        )
        by_name = {t.name.lower(): t for t in viewer.tables}
        for schema, name, definition in rows:
            if kind == "schemas":
                yield CatalogObject(str(name), "", str(schema))
                continue
            info = by_name.get(_qualified(str(schema), str(name)))
            columns = info.columns if info is not None and kind == "views" else ()
            code = "V" if kind == "views" else "P"
            yield CatalogObject(str(name), code, str(schema), columns, str(definition))

    return provider


#: A provider: the objects of one kind the viewer may see.
CatalogProvider = Callable[["Viewer"], Iterable[CatalogObject]]
#: What the engine plugs in by default: its own registry of views, procedures and schemas.
DEFAULT_PROVIDER_KINDS = ("views", "procedures", "schemas")


def object_id(schema: str, name: str) -> int:
    """A stable object_id for an object of a schema (the same in every session)."""
    return 0x10000000 + zlib.crc32(f"{schema}.{name}".lower().encode()) % 0x6FFFFFFF


def _cols(spec: str) -> tuple[Column, ...]:
    out = []
    for item in spec.split(","):
        name, type_text = item.split()
        out.append(Column(name, SqlType.parse(type_text)))
    return tuple(out)


_OBJECT = (
    "name sysname, object_id int, principal_id int, schema_id int, parent_object_id int,"
    " type char(2), type_desc nvarchar(60), create_date datetime, modify_date datetime,"
    " is_ms_shipped bit, is_published bit, is_schema_published bit"
)
_COLUMN = (
    "object_id int, name sysname, column_id int, system_type_id tinyint, user_type_id int,"
    " max_length smallint, precision tinyint, scale tinyint, collation_name sysname,"
    " is_nullable bit, is_ansi_padded bit, is_rowguidcol bit, is_identity bit, is_computed bit,"
    " is_filestream bit, is_replicated bit, is_non_sql_subscribed bit, is_merge_published bit,"
    " is_dts_replicated bit, is_xml_document bit, xml_collection_id int, default_object_id int,"
    " rule_object_id int, is_sparse bit, is_column_set bit, generated_always_type tinyint,"
    " generated_always_type_desc nvarchar(60), is_hidden bit, is_masked bit"
)
_ISC = "TABLE_CATALOG nvarchar(128), TABLE_SCHEMA nvarchar(128), TABLE_NAME sysname"
_CONSTRAINT = (
    "CONSTRAINT_CATALOG nvarchar(128), CONSTRAINT_SCHEMA nvarchar(128), CONSTRAINT_NAME sysname"
)

#: Catalog view name (lower case, schema-qualified) -> its columns.
VIEWS: dict[str, tuple[Column, ...]] = {
    "sys.schemas": _cols("name sysname, schema_id int, principal_id int"),
    "sys.objects": _cols(_OBJECT),
    "sys.tables": _cols(
        _OBJECT + ", lob_data_space_id int, filestream_data_space_id int,"
        " max_column_id_used int, lock_on_bulk_load bit, uses_ansi_nulls bit, is_replicated bit,"
        " has_replication_filter bit, is_merge_published bit, is_sync_tran_subscribed bit,"
        " has_unchecked_assembly_data bit, text_in_row_limit int,"
        " large_value_types_out_of_row bit, is_tracked_by_cdc bit, lock_escalation tinyint,"
        " lock_escalation_desc nvarchar(60), is_filetable bit, is_memory_optimized bit,"
        " durability tinyint, durability_desc nvarchar(60), temporal_type tinyint,"
        " temporal_type_desc nvarchar(60), history_table_id int,"
        " is_remote_data_archive_enabled bit, is_external bit, is_node bit, is_edge bit"
    ),
    "sys.views": _cols(
        _OBJECT + ", is_replicated bit, has_replication_filter bit, has_opaque_metadata bit,"
        " has_unchecked_assembly_data bit, with_check_option bit, is_date_correlation_view bit"
    ),
    "sys.procedures": _cols(
        _OBJECT + ", is_auto_executed bit, is_execution_replicated bit,"
        " is_repl_serializable_subscription bit, skips_repl_constraints bit"
    ),
    "sys.sql_modules": _cols(
        "object_id int, definition nvarchar(max), uses_ansi_nulls bit, uses_quoted_identifier bit,"
        " is_schema_bound bit, execute_as_principal_id int"
    ),
    "sys.columns": _cols(_COLUMN),
    "sys.identity_columns": _cols(
        _COLUMN + ", seed_value bigint, increment_value bigint, last_value bigint,"
        " is_not_for_replication bit"
    ),
    "sys.types": _cols(
        "name sysname, system_type_id tinyint, user_type_id int, schema_id int, principal_id int,"
        " max_length smallint, precision tinyint, scale tinyint, collation_name sysname,"
        " is_nullable bit, is_user_defined bit, is_assembly_type bit, default_object_id int,"
        " rule_object_id int, is_table_type bit"
    ),
    "sys.indexes": _cols(
        "object_id int, name sysname, index_id int, type tinyint, type_desc nvarchar(60),"
        " is_unique bit, data_space_id int, ignore_dup_key bit, is_primary_key bit,"
        " is_unique_constraint bit, fill_factor tinyint, is_padded bit, is_disabled bit,"
        " is_hypothetical bit, is_ignored_in_optimization bit, allow_row_locks bit,"
        " allow_page_locks bit, has_filter bit, filter_definition nvarchar(max)"
    ),
    "sys.index_columns": _cols(
        "object_id int, index_id int, index_column_id int, column_id int, key_ordinal tinyint,"
        " partition_ordinal tinyint, is_descending_key bit, is_included_column bit"
    ),
    "sys.key_constraints": _cols(
        _OBJECT + ", unique_index_id int, is_system_named bit, is_enforced bit"
    ),
    "sys.foreign_keys": _cols(
        _OBJECT + ", referenced_object_id int, key_index_id int, is_disabled bit,"
        " is_not_for_replication bit, is_not_trusted bit, delete_referential_action tinyint,"
        " delete_referential_action_desc nvarchar(60), update_referential_action tinyint,"
        " update_referential_action_desc nvarchar(60), is_system_named bit"
    ),
    "sys.foreign_key_columns": _cols(
        "constraint_object_id int, constraint_column_id int, parent_object_id int,"
        " parent_column_id int, referenced_object_id int, referenced_column_id int"
    ),
    "sys.default_constraints": _cols(
        _OBJECT + ", parent_column_id int, definition nvarchar(max), is_system_named bit"
    ),
    "sys.extended_properties": _cols(
        "class tinyint, class_desc nvarchar(60), major_id int, minor_id int, name sysname,"
        " value sql_variant"
    ),
    "sys.databases": _cols(
        "name sysname, database_id int, source_database_id int, create_date datetime,"
        " compatibility_level tinyint, collation_name sysname, user_access tinyint,"
        " user_access_desc nvarchar(60), is_read_only bit, state tinyint, state_desc nvarchar(60),"
        " recovery_model tinyint, recovery_model_desc nvarchar(60)"
    ),
    "sys.dm_exec_sessions": _cols(
        "session_id smallint, login_time datetime, host_name nvarchar(128),"
        " program_name nvarchar(128), host_process_id int, client_version int,"
        " client_interface_name nvarchar(32), login_name nvarchar(128), status nvarchar(30),"
        " cpu_time int, memory_usage int, total_elapsed_time int, last_request_start_time datetime,"
        " last_request_end_time datetime, reads bigint, writes bigint, logical_reads bigint,"
        " is_user_process bit, text_size int, language nvarchar(128), date_format nvarchar(3),"
        " date_first smallint, quoted_identifier bit, arithabort bit, ansi_null_dflt_on bit,"
        " ansi_defaults bit, ansi_warnings bit, ansi_padding bit, ansi_nulls bit,"
        " concat_null_yields_null bit, transaction_isolation_level smallint, lock_timeout int,"
        " deadlock_priority int, row_count bigint, prev_error int,"
        " original_login_name nvarchar(128), database_id smallint, open_transaction_count int"
    ),
    "sys.dm_exec_connections": _cols(
        "session_id int, most_recent_session_id int, connect_time datetime,"
        " net_transport nvarchar(40), protocol_type nvarchar(40), protocol_version int,"
        " endpoint_id int, encrypt_option nvarchar(40), auth_scheme nvarchar(40),"
        " node_affinity smallint, num_reads int, num_writes int, last_read datetime,"
        " last_write datetime, net_packet_size int, client_net_address varchar(48),"
        " client_tcp_port int, local_net_address varchar(48), local_tcp_port int,"
        " connection_id uniqueidentifier, parent_connection_id uniqueidentifier"
    ),
    "information_schema.tables": _cols(_ISC + ", TABLE_TYPE varchar(10)"),
    "information_schema.columns": _cols(
        _ISC + ", COLUMN_NAME sysname, ORDINAL_POSITION int, COLUMN_DEFAULT nvarchar(4000),"
        " IS_NULLABLE varchar(3), DATA_TYPE nvarchar(128), CHARACTER_MAXIMUM_LENGTH int,"
        " CHARACTER_OCTET_LENGTH int, NUMERIC_PRECISION tinyint, NUMERIC_PRECISION_RADIX smallint,"
        " NUMERIC_SCALE int, DATETIME_PRECISION smallint, CHARACTER_SET_CATALOG sysname,"
        " CHARACTER_SET_SCHEMA sysname, CHARACTER_SET_NAME sysname, COLLATION_CATALOG sysname,"
        " COLLATION_SCHEMA sysname, COLLATION_NAME sysname, DOMAIN_CATALOG sysname,"
        " DOMAIN_SCHEMA sysname, DOMAIN_NAME sysname"
    ),
    "information_schema.views": _cols(
        _ISC + ", VIEW_DEFINITION nvarchar(4000), CHECK_OPTION varchar(7), IS_UPDATABLE varchar(2)"
    ),
    "information_schema.routines": _cols(
        "SPECIFIC_CATALOG nvarchar(128), SPECIFIC_SCHEMA nvarchar(128), SPECIFIC_NAME sysname,"
        " ROUTINE_CATALOG nvarchar(128), ROUTINE_SCHEMA nvarchar(128), ROUTINE_NAME sysname,"
        " ROUTINE_TYPE nvarchar(20), DATA_TYPE sysname, ROUTINE_BODY nvarchar(30),"
        " ROUTINE_DEFINITION nvarchar(4000), IS_DETERMINISTIC nvarchar(10),"
        " SQL_DATA_ACCESS nvarchar(30), CREATED datetime, LAST_ALTERED datetime"
    ),
    "information_schema.table_constraints": _cols(
        _CONSTRAINT + ", " + _ISC + ", CONSTRAINT_TYPE varchar(11), IS_DEFERRABLE varchar(2),"
        " INITIALLY_DEFERRED varchar(2)"
    ),
    "information_schema.key_column_usage": _cols(
        _CONSTRAINT + ", " + _ISC + ", COLUMN_NAME sysname, ORDINAL_POSITION int"
    ),
    "information_schema.referential_constraints": _cols(
        _CONSTRAINT + ", UNIQUE_CONSTRAINT_CATALOG nvarchar(128),"
        " UNIQUE_CONSTRAINT_SCHEMA nvarchar(128), UNIQUE_CONSTRAINT_NAME sysname,"
        " MATCH_OPTION varchar(7), UPDATE_RULE varchar(11), DELETE_RULE varchar(11)"
    ),
}
CATALOG_SCHEMAS = ("sys", "information_schema")


def view_name(schema: str, name: str) -> str | None:
    """The VIEWS key for ``schema.name`` if it is a catalog view tdslite offers."""
    key = f"{schema}.{name}".lower()
    return key if key in VIEWS else None


def substitute(node: exp.Table, database: str) -> tuple[str, list[Column]] | None:
    """Replace a catalog view reference by the subquery that reads its rows (step 1 of the
    module docstring); returns (view name, columns), or None if ``node`` is not a catalog view.

    Raises:
        SqlError: 208 for an unknown name in the sys / INFORMATION_SCHEMA schemas.
    """
    if not node.db or node.db.lower() not in CATALOG_SCHEMAS:
        return None
    full = ".".join(p for p in (node.catalog, node.db, node.name) if p)
    name = view_name(node.db, node.name)
    if name is None or (node.catalog and node.catalog.lower() not in (database.lower(), "master")):
        raise _errors.invalid_object(full)
    columns = VIEWS[name]
    projections = ", ".join(
        f"json_extract(value, '$[{i}]') AS {_quote(c.name)}" for i, c in enumerate(columns)
    )
    inner = sqlglot.parse_one(
        f"SELECT {projections} FROM json_each(tds_sysview('{name}'))", read="sqlite"
    )
    alias = exp.TableAlias(this=exp.to_identifier(node.alias_or_name, quoted=True))
    node.replace(exp.Subquery(this=inner, alias=alias))
    return name, list(columns)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
