"""Table-valued parameters: CREATE TYPE ... AS TABLE / DROP TYPE, and TVPs (TDS type 0xF3) sent
by python-tds (``pytds.TableValuedParam``) and tedious (``TYPES.TVP``) to sp_executesql, read as
READONLY tables."""

from __future__ import annotations

import decimal
from typing import Any

import pytds
import pytest

from tdslite import TdsServer
from tests.tdslite._tds_helpers import in_thread
from tests.tdslite.test_client_pytds import connect
from tests.tdslite.test_client_tedious import run_plan

TYPE = "CREATE TYPE dbo.IdList AS TABLE (id int NOT NULL, label nvarchar(20), raw varbinary(4))"
SETUP = (
    TYPE + "; CREATE TABLE item (id int PRIMARY KEY, price decimal(10,2));"
    " INSERT INTO item VALUES (1, 1.50), (2, 2.50), (3, 3.50)"
)
JOIN = "SELECT t.id, t.label, t.raw, i.price FROM {} AS t JOIN item i ON i.id = t.id ORDER BY t.id"


async def test_tvp_pytds(tds_server: TdsServer) -> None:
    def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with connect(tds_server) as conn, conn.cursor() as cur:
            cur.execute(SETUP)

            def tvp() -> Any:  # python-tds consumes the rows of a TableValuedParam
                rows = [(1, "a", pytds.Binary(b"\x01\x02")), (3, None, None)]
                return pytds.TableValuedParam(type_name="dbo.IdList", rows=rows)

            cur.execute(JOIN.format("%s"), (tvp(),))
            out["joined"] = cur.fetchall()
            cur.execute("INSERT INTO item (id, price) SELECT id + 10, 9.99 FROM %s", (tvp(),))
            out["inserted"] = cur.rowcount
            cur.execute(
                "SELECT COUNT(*) FROM item WHERE id IN (SELECT id FROM %s)",
                (pytds.TableValuedParam(type_name="IdList", rows=[(2, "b", None)]),),
            )
            out["in"] = cur.fetchone()[0]
            for name, sql, params in [
                ("readonly", "DELETE FROM %s", (tvp(),)),
                ("null_515", "SELECT * FROM %s", (
                    pytds.TableValuedParam(type_name="IdList", rows=[(None, "x", None)]),)),
            ]:  # fmt: skip
                with pytest.raises(pytds.Error) as info:
                    cur.execute(sql, params)
                out[name] = info.value.msg_no  # type: ignore[attr-defined]
            cur.execute("DROP TYPE dbo.IdList")
            with pytest.raises(pytds.Error) as info:
                cur.execute("SELECT * FROM %s", (tvp(),))
            out["dropped"] = info.value.msg_no  # type: ignore[attr-defined]
            with pytest.raises(pytds.Error) as info:
                cur.execute("DROP TYPE IdList")
            out["drop_again"] = info.value.msg_no  # type: ignore[attr-defined]
            cur.execute("DROP TYPE IF EXISTS IdList")
        return out

    out = await in_thread(run)
    assert out["joined"] == [
        (1, "a", b"\x01\x02", decimal.Decimal("1.50")),
        (3, None, None, decimal.Decimal("3.50")),
    ]
    assert out["inserted"] == 2
    assert out["in"] == 1
    assert out["readonly"] == 10700
    assert out["null_515"] == 515
    assert out["dropped"] == 2715
    assert out["drop_again"] == 3701


async def test_create_type_needs_admin(tds_server: TdsServer) -> None:
    def run() -> tuple[int, int]:
        with connect(tds_server) as conn, conn.cursor() as cur:
            cur.execute(TYPE)
        numbers = []
        with connect(tds_server, "writer") as conn, conn.cursor() as cur:
            for sql in ("CREATE TYPE t2 AS TABLE (a int)", "DROP TYPE IdList"):
                with pytest.raises(pytds.Error) as info:
                    cur.execute(sql)
                numbers.append(info.value.msg_no)  # type: ignore[attr-defined]
        return numbers[0], numbers[1]

    assert await in_thread(run) == (262, 3701)


async def test_tvp_read_only_login_reads_it(tds_server: TdsServer) -> None:
    """A read-only login (its SQLite connection is query_only) can still pass a TVP."""

    def run() -> list[Any]:
        with connect(tds_server) as conn, conn.cursor() as cur:
            cur.execute(SETUP)
        with connect(tds_server, "reader") as conn, conn.cursor() as cur:
            tvp = pytds.TableValuedParam(type_name="IdList", rows=[(2, "b", None)])
            cur.execute(JOIN.format("%s"), (tvp,))
            rows: list[Any] = cur.fetchall()
            return rows

    assert await in_thread(run) == [(2, "b", None, decimal.Decimal("2.50"))]


async def test_tvp_tedious(tds_server: TdsServer) -> None:
    tvp = {
        "name": "IdList",
        "schema": "dbo",
        "columns": [
            {"name": "id", "type": "Int"},
            {"name": "label", "type": "NVarChar", "length": 20},
            {"name": "raw", "type": "VarBinary", "length": 4},
        ],
        "rows": [[1, "a", {"hex": "0102"}], [2, None, None]],
    }
    result = await run_plan(
        tds_server,
        [
            {"sql": SETUP},
            {"sql": JOIN.format("@ids"), "params": [{"name": "ids", "type": "TVP", "value": tvp}]},
            {
                "sql": "UPDATE @ids SET label = N'x'",
                "params": [{"name": "ids", "type": "TVP", "value": tvp}],
            },
        ],
    )
    steps = result["steps"]
    assert steps[1]["rows"] == [[1, "a", {"hex": "0102"}, 1.5], [2, None, None, 2.5]]
    assert steps[2]["error"]["number"] == 10700
