"""System stored procedures clients call for metadata: sp_datatype_info (and its _90 / _100
forms, which FreeTDS ODBC runs for SQLGetTypeInfo) and sp_help.

Each takes the session and the EXEC arguments (positional, then ``@name = value``) and yields
result sets shaped as SQL Server's; sp_help reads the catalog views' rows (_sysrows.py), so it
shows only what the caller may see and says 15009 for anything else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal

from . import _errors, _sysrows
from ._results import ResultSet
from ._state import SessionView
from ._systypes import COLLATION, shape
from ._types import Column, SqlType

Args = tuple[list[tuple[object, SqlType | None]], dict[str, tuple[object, SqlType | None]]]


def _cols(spec: str) -> list[Column]:
    items = (i.split() for i in spec.split(","))
    return [Column(n, SqlType.parse(t.replace(";", ","))) for n, t in items]


_TYPE_INFO_COLUMNS = _cols(
    "TYPE_NAME sysname, DATA_TYPE smallint, PRECISION int, LITERAL_PREFIX varchar(32),"
    " LITERAL_SUFFIX varchar(32), CREATE_PARAMS varchar(32), NULLABLE smallint,"
    " CASE_SENSITIVE smallint, SEARCHABLE smallint, UNSIGNED_ATTRIBUTE smallint, MONEY smallint,"
    " AUTO_INCREMENT smallint, LOCAL_TYPE_NAME sysname, MINIMUM_SCALE smallint,"
    " MAXIMUM_SCALE smallint, SQL_DATA_TYPE smallint, SQL_DATETIME_SUB smallint,"
    " NUM_PREC_RADIX int, INTERVAL_PRECISION smallint, USERTYPE smallint"
)
_Q = "'"
_N = "N'"
# name, ODBC 3 data type, precision, prefix, suffix, create params, nullable, searchable,
# unsigned, money, auto increment, min scale, max scale, SQL_DATA_TYPE, SQL_DATETIME_SUB, radix,
# usertype (CASE_SENSITIVE is 0: the default collation is case-insensitive).
_TYPE_INFO: tuple[tuple[object, ...], ...] = (
    ("bit", -7, 1, None, None, None, 1, 2, None, 0, None, 0, 0, -7, None, None, 16),
    ("tinyint", -6, 3, None, None, None, 1, 2, 1, 0, 0, 0, 0, -6, None, 10, 5),
    ("tinyint identity", -6, 3, None, None, None, 0, 2, 1, 0, 1, 0, 0, -6, None, 10, 5),
    ("bigint", -5, 19, None, None, None, 1, 2, 0, 0, 0, 0, 0, -5, None, 10, 0),
    ("bigint identity", -5, 19, None, None, None, 0, 2, 0, 0, 1, 0, 0, -5, None, 10, 0),
    ("image", -4, 2147483647, "0x", None, None, 1, 0, None, 0, None, None, None, -4, None,
     None, 20),
    ("varbinary", -3, 8000, "0x", None, "max length", 1, 2, None, 0, None, None, None, -3, None,
     None, 4),
    ("binary", -2, 8000, "0x", None, "length", 1, 2, None, 0, None, None, None, -2, None, None, 3),
    ("text", -1, 2147483647, _Q, _Q, None, 1, 1, None, 0, None, None, None, -1, None, None, 19),
    ("ntext", -10, 1073741823, _N, _Q, None, 1, 1, None, 0, None, None, None, -10, None, None, 0),
    ("nvarchar", -9, 4000, _N, _Q, "max length", 1, 3, None, 0, None, None, None, -9, None, None,
     0),
    ("sysname", -9, 128, _N, _Q, None, 0, 3, None, 0, None, None, None, -9, None, None, 18),
    ("nchar", -8, 4000, _N, _Q, "length", 1, 3, None, 0, None, None, None, -8, None, None, 0),
    ("uniqueidentifier", -11, 36, _Q, _Q, None, 1, 2, None, 0, None, None, None, -11, None, None,
     0),
    ("char", 1, 8000, _Q, _Q, "length", 1, 3, None, 0, None, None, None, 1, None, None, 1),
    ("numeric", 2, 38, None, None, "precision,scale", 1, 2, 0, 0, 0, 0, 38, 2, None, 10, 10),
    ("numeric() identity", 2, 38, None, None, "precision", 0, 2, 0, 0, 1, 0, 0, 2, None, 10, 10),
    ("decimal", 3, 38, None, None, "precision,scale", 1, 2, 0, 0, 0, 0, 38, 3, None, 10, 24),
    ("money", 3, 19, "$", None, None, 1, 2, 0, 1, 0, 4, 4, 3, None, 10, 11),
    ("decimal() identity", 3, 38, None, None, "precision", 0, 2, 0, 0, 1, 0, 0, 3, None, 10, 24),
    ("smallmoney", 3, 10, "$", None, None, 1, 2, 0, 1, 0, 4, 4, 3, None, 10, 21),
    ("int", 4, 10, None, None, None, 1, 2, 0, 0, 0, 0, 0, 4, None, 10, 7),
    ("int identity", 4, 10, None, None, None, 0, 2, 0, 0, 1, 0, 0, 4, None, 10, 7),
    ("smallint", 5, 5, None, None, None, 1, 2, 0, 0, 0, 0, 0, 5, None, 10, 6),
    ("smallint identity", 5, 5, None, None, None, 0, 2, 0, 0, 1, 0, 0, 5, None, 10, 6),
    ("float", 6, 53, None, None, None, 1, 2, 0, 0, 0, None, None, 6, None, 2, 8),
    ("real", 7, 24, None, None, None, 1, 2, 0, 0, 0, None, None, 7, None, 2, 23),
    ("varchar", 12, 8000, _Q, _Q, "max length", 1, 3, None, 0, None, None, None, 12, None, None,
     2),
    ("date", 91, 10, _Q, _Q, None, 1, 3, None, 0, None, None, None, 9, 1, None, 0),
    ("time", -154, 16, _Q, _Q, "scale", 1, 3, None, 0, None, 0, 7, -154, 0, None, 0),
    ("datetime2", 93, 27, _Q, _Q, "scale", 1, 3, None, 0, None, 0, 7, 9, 3, None, 0),
    ("datetimeoffset", -155, 34, _Q, _Q, "scale", 1, 3, None, 0, None, 0, 7, -155, 0, None, 0),
    ("datetime", 93, 23, _Q, _Q, None, 1, 3, None, 0, None, 3, 3, 9, 3, None, 12),
    ("smalldatetime", 93, 16, _Q, _Q, None, 1, 3, None, 0, None, 0, 0, 9, 3, None, 22),
)  # fmt: skip
#: ODBC 2 codes of the date and time types (SQL_DATE, SQL_TIMESTAMP).
_ODBC2 = {91: 9, 93: 11}


def _argument(args: Args, index: int, name: str, default: object) -> object:
    positional, named = args
    if name in named:
        return named[name][0]
    return positional[index][0] if index < len(positional) else default


def datatype_info(session: SessionView, args: Args) -> Iterator[ResultSet]:
    """sp_datatype_info [@data_type =] n [, [@ODBCVer =] v]: one row per type (0: all)."""
    wanted = int(_argument(args, 0, "data_type", 0) or 0)  # type: ignore[call-overload]
    odbc = int(_argument(args, 1, "odbcver", 2) or 2)  # type: ignore[call-overload]
    rows = []
    for entry in _TYPE_INFO:
        (name, code, precision, prefix, suffix, params, nullable, searchable, unsigned, money,
         auto, min_scale, max_scale, sql_type, sub, radix, usertype) = entry  # fmt: skip
        if odbc < 3:
            code = _ODBC2.get(code, code)  # type: ignore[call-overload]
        if wanted and code != wanted:
            continue
        rows.append(
            (name, code, precision, prefix, suffix, params, nullable, 0, searchable, unsigned,
             money, auto, name, min_scale, max_scale, sql_type, sub, radix, None, usertype)
        )  # fmt: skip
    rows.sort(key=lambda r: r[1])  # type: ignore[arg-type,return-value]
    yield ResultSet(list(_TYPE_INFO_COLUMNS), iter(rows))


_HELP_OBJECT = _cols("Name sysname, Owner sysname, Type nvarchar(31), Created_datetime datetime")
_HELP_LIST = _cols("Name sysname, Owner sysname, Object_type nvarchar(31)")
_HELP_COLUMNS = _cols(
    "Column_name sysname, Type sysname, Computed varchar(35), Length int, Prec char(5),"
    " Scale char(5), Nullable varchar(35), TrimTrailingBlanks varchar(35),"
    " FixedLenNullInSource varchar(35), Collation sysname"
)
_HELP_IDENTITY = _cols(
    "Identity sysname, Seed numeric(38;0), Increment numeric(38;0), Not_For_Replication int"
)
_HELP_IDENTITY[3] = Column("Not For Replication", SqlType("int"))
_HELP_ROWGUID = _cols("RowGuidCol sysname")
_HELP_FILEGROUP = _cols("Data_located_on_filegroup sysname")
_HELP_INDEXES = _cols(
    "index_name sysname, index_description varchar(210), index_keys nvarchar(2078)"
)
_HELP_CONSTRAINTS = _cols(
    "constraint_type nvarchar(146), constraint_name sysname, delete_action nvarchar(9),"
    " update_action nvarchar(9), status_enabled varchar(8), status_for_replication varchar(19),"
    " constraint_keys nvarchar(2078)"
)
_HELP_REFERENCED = _cols("Table_is_referenced_by_foreign_key nvarchar(516)")
_HELP_REFERENCED[0] = Column("Table is referenced by foreign key", SqlType("nvarchar", 516))
_STRING_LIKE = {"char", "varchar", "nchar", "nvarchar", "binary", "varbinary"}


def help_(session: SessionView, args: Args) -> Iterator[ResultSet]:
    """sp_help [[@objname =] 'name']: the objects the caller sees, or one table's description."""
    viewer = session.viewer()
    name = _argument(args, 0, "objname", None)
    if name is None:
        listing = [
            (row[0], "dbo", row[6])
            for row in _sysrows.objects(viewer)
            if row[5] in ("U ", "V ", "P ", "FN")
        ]
        yield ResultSet(list(_HELP_LIST), iter(sorted(listing)))
        return
    text = str(name).split(".")[-1].strip("[]")
    table = next((t for t in viewer.visible_tables() if t.name.lower() == text.lower()), None)
    if table is None:
        raise _errors.SqlError(
            15009,
            f"The object '{name}' does not exist in database '{session.database}' or is invalid "
            "for this operation.",
        )
    yield ResultSet(list(_HELP_OBJECT), iter([(table.name, "dbo", "user table", viewer.started)]))
    columns = []
    for column in table.columns:
        s = shape(column.type)
        stringy = column.type.name in _STRING_LIKE
        numeric = s.precision and not stringy
        columns.append(
            (column.name, column.type.name, "no", s.max_length,
             f"{s.precision:>5}" if numeric else "     ", f"{s.scale:>5}" if numeric else "     ",
             "yes" if column.nullable else "no", "no" if stringy else "(n/a)",
             "no" if stringy else "(n/a)",
             COLLATION if s.collation else None)
        )  # fmt: skip
    yield ResultSet(list(_HELP_COLUMNS), iter(columns))
    identity = table.identity
    yield ResultSet(
        list(_HELP_IDENTITY),
        iter(
            [(identity.name, Decimal(1), Decimal(1), 0)]
            if identity
            else [("No identity column defined.", None, None, None)]
        ),
    )
    yield ResultSet(list(_HELP_ROWGUID), iter([("No rowguidcol column defined.",)]))
    yield ResultSet(list(_HELP_FILEGROUP), iter([("PRIMARY",)]))
    keys = _sysrows.table_keys(viewer, table)
    indexes = []
    for index_id, key in _sysrows.index_ids(viewer, table):
        kind = "clustered" if index_id == 1 else "nonclustered"
        description = kind + (", unique" if key.unique else "")
        description += ", primary key" if key.kind == "PK" else ""
        description += ", unique key" if key.kind == "UQ" else ""
        indexes.append((key.name, description + " located on PRIMARY", ", ".join(key.columns)))
    if indexes:
        yield ResultSet(list(_HELP_INDEXES), iter(indexes))
    constraints: list[tuple[object, ...]] = []
    for name_, _column, cid, definition in _sysrows.table_defaults(viewer, table):
        constraints.append(
            (f"DEFAULT on column {table.columns[cid - 1].name}", name_, "(n/a)", "(n/a)",
             "(n/a)", "(n/a)", definition)
        )  # fmt: skip
    for key in keys:
        if key.kind == "F":
            constraints.append(
                ("FOREIGN KEY", key.name, "No Action", "No Action", "Enabled",
                 "Is_For_Replication", ", ".join(key.columns))
            )  # fmt: skip
            refs = ", ".join(key.referenced_columns)
            constraints.append(
                (" ", " ", " ", " ", " ", " ",
                 f"REFERENCES {viewer.database}.dbo.{key.referenced} ({refs})")
            )  # fmt: skip
        elif key.kind in ("PK", "UQ"):
            label = "PRIMARY KEY (clustered)" if key.kind == "PK" else "UNIQUE (non-clustered)"
            constraints.append(
                (label, key.name, "(n/a)", "(n/a)", "(n/a)", "(n/a)", ", ".join(key.columns))
            )
    if constraints:
        yield ResultSet(list(_HELP_CONSTRAINTS), iter(constraints))
    referencing = [
        (f"{viewer.database}.dbo.{other.name}: {key.name}",)
        for other, key, parent in _sysrows.table_foreign_keys(viewer)
        if parent.name == table.name
    ]
    if referencing:
        yield ResultSet(list(_HELP_REFERENCED), iter(referencing))


#: Procedure name (lower case) -> implementation.
PROCEDURES: dict[str, Callable[[SessionView, Args], Iterator[ResultSet]]] = {
    "sp_datatype_info": datatype_info,
    "sp_datatype_info_90": datatype_info,
    "sp_datatype_info_100": datatype_info,
    "sp_help": help_,
}
