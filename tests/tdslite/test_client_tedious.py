"""Node `tedious` (npm, pinned in package.json; an independent JavaScript client) against tdslite.

The pytest side starts tdslite (real engine) and runs tests/tdslite/js/tedious_client.mjs with a
plan (statements + typed parameters); the script prints what tedious saw as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from tdslite import TdsServer, open_server
from tests.support.node import NODE
from tests.tdslite._tds_helpers import PASSWORDS

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("js") / "tedious_client.mjs"

pytestmark = pytest.mark.skipif(
    not NODE.exists() or not (ROOT / "node_modules" / "tedious").is_dir(),
    reason="node or node_modules/tedious missing: run `npm ci` at the repo root",
)


async def run_plan(server: TdsServer, steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    plan = {
        "host": server.host,
        "port": server.port,
        "user": "admin",
        "password": PASSWORDS["admin"],
        "steps": steps,
        **extra,
    }
    with trio.fail_after(60):
        proc = await trio.run_process(
            [str(NODE), str(SCRIPT), json.dumps(plan)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
        )
    assert proc.returncode == 0, proc.stderr.decode()
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


STEPS: list[dict[str, Any]] = [
    {
        "sql": "CREATE TABLE item (id int PRIMARY KEY, name nvarchar(40) NOT NULL, "
        "price decimal(10,2), added datetime2(3), tag uniqueidentifier, blob varbinary(20), "
        "ok bit)"
    },
    {
        "sql": "INSERT INTO item VALUES (@id, @name, @price, @added, @tag, @blob, @ok)",
        "params": [
            {"name": "id", "type": "Int", "value": 1},
            {"name": "name", "type": "NVarChar", "value": "Äpfel"},
            {
                "name": "price",
                "type": "Decimal",
                "value": 1.55,
                "options": {"precision": 10, "scale": 2},
            },
            {
                "name": "added",
                "type": "DateTime2",
                "value": "2024-05-06T07:08:09.123Z",
                "options": {"scale": 3},
            },
            {
                "name": "tag",
                "type": "UniqueIdentifier",
                "value": "12345678-1234-5678-1234-567812345678",
            },
            {"name": "blob", "type": "VarBinary", "value": {"hex": "00ff10"}},
            {"name": "ok", "type": "Bit", "value": True},
        ],
    },
    {"sql": "INSERT INTO item (id, name) VALUES (2, N'Birne')"},
    {
        "sql": "SELECT id, name, price, added, tag, blob, ok FROM item "
        "WHERE id >= @min ORDER BY id",
        "params": [{"name": "min", "type": "Int", "value": 1}],
    },
    {"sql": "SELECT * FROM no_such_table"},
    {"sql": "INSERT INTO item (id, name) VALUES (1, N'duplicate')"},
    {"sql": "SELECT COUNT(*) FROM item"},
]


async def test_tedious_params_rows_errors(tds_server: TdsServer) -> None:
    result = await run_plan(tds_server, STEPS)
    assert result["connected"] is True, result
    create, insert, insert2, select, missing, duplicate, count = result["steps"]
    assert "error" not in create, result
    assert "error" not in insert, result
    assert "error" not in insert2, result
    assert insert["rowCount"] == 1
    assert select["rows"] == [
        [
            1,
            "Äpfel",
            1.55,
            "2024-05-06T07:08:09.123Z",
            "12345678-1234-5678-1234-567812345678",
            {"hex": "00ff10"},
            True,
        ],
        [2, "Birne", None, None, None, None, None],
    ]
    assert missing["error"]["number"] == 208
    assert missing["error"]["class"] == 16
    assert duplicate["error"]["number"] == 2627
    assert count["rows"] == [[2]]
    params = next(
        e
        for e in tds_server.statement_log.entries
        if e["statement"].startswith("INSERT INTO item VALUES")
    )["params"]
    assert {p["name"]: p["type"] for p in params}["@price"] == "decimal(10,2)"


async def test_tedious_reset_clears_session_context(tds_server: TdsServer) -> None:
    steps = [
        {"sql": "EXEC sp_set_session_context @key = N'k', @value = N'v'"},
        {"sql": "SELECT CAST(SESSION_CONTEXT(N'k') AS nvarchar(10))"},
        {"reset": True},
        {"sql": "SELECT CAST(SESSION_CONTEXT(N'k') AS nvarchar(10))"},
    ]
    result = await run_plan(tds_server, steps)
    assert [s.get("rows") for s in result["steps"]] == [[], [["v"]], None, [[None]]], result
    assert ("reset", "RESETCONNECTION") in [
        (e["kind"], e["statement"]) for e in tds_server.statement_log.entries
    ]


async def test_tedious_encrypted(
    tmp_path: Path, tds_users_file: Path, tls_files: dict[str, str]
) -> None:
    async with open_server(
        db=tmp_path / "tls.sqlite",
        users=tds_users_file,
        tls_cert=tls_files["cert"],
        tls_key=tls_files["key"],
    ) as server:
        result = await run_plan(server, [{"sql": "SELECT N'secret' AS s"}], encrypt=True)
    assert result["steps"] == [{"rows": [["secret"]], "rowCount": 1}], result


async def test_tedious_cancel_long_query(tds_server: TdsServer) -> None:
    """connection.cancel() after the request was sent: ATTENTION, then DONE(ATTN) ends it."""
    long_query = "SELECT COUNT(*) FROM " + ", ".join(f"ten t{i}" for i in range(10))
    steps = [
        {"sql": "CREATE TABLE ten (i int)"},
        {"sql": "INSERT INTO ten VALUES " + ", ".join(f"({i})" for i in range(10))},
        {"sql": long_query, "cancelAfterMs": 300},
        {"sql": "SELECT 42"},
    ]
    with trio.fail_after(30):
        result = await run_plan(tds_server, steps)
    cancelled, after = result["steps"][2], result["steps"][3]
    assert cancelled["error"]["message"] == "Canceled.", result
    assert after["rows"] == [[42]], result
    outcome = [
        e["outcome"] for e in tds_server.statement_log.entries if e["statement"] == long_query
    ]
    assert outcome == [{"cancelled": True}]


async def test_tedious_100ns_digit_of_parameters_and_results(tds_server: TdsServer) -> None:
    # tedious carries the digits past the millisecond in nanosecondDelta (seconds): .123 + .0004567
    def precise(iso: str) -> dict[str, Any]:
        return {"iso": iso, "nanosecondDelta": 0.0004567}

    steps = [
        {
            "sql": "SELECT CONVERT(varchar(40), @t), CONVERT(varchar(40), @d), "
            "CONVERT(varchar(40), @o), @t, @d, @o",
            "params": [
                {
                    "name": "t",
                    "type": "Time",
                    "value": precise("1970-01-01T13:14:15.123Z"),
                    "options": {"scale": 7},
                },
                {
                    "name": "d",
                    "type": "DateTime2",
                    "value": precise("2024-02-29T13:14:15.123Z"),
                    "options": {"scale": 7},
                },
                {
                    "name": "o",
                    "type": "DateTimeOffset",
                    "value": precise("2024-02-29T13:14:15.123Z"),
                    "options": {"scale": 7},
                },
            ],
        }
    ]
    result = await run_plan(tds_server, steps, precise=True)
    (row,) = result["steps"][0]["rows"]
    assert row[:3] == [
        "13:14:15.1234567",
        "2024-02-29 13:14:15.1234567",
        "2024-02-29 13:14:15.1234567 +00:00",
    ]
    for value in row[3:]:
        assert value["iso"].endswith("13:14:15.123Z")
        assert round(value["nanosecondsDelta"], 7) == 0.0004567
