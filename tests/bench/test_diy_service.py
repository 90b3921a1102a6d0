"""bench/diy_service.py, the do-it-yourself baseline, both ways (``--server hypercorn|stdlib``),
each as its own process against tdslite: the same NDJSON answers, SQL errors and bad bodies
answered, the stdlib one keeping its HTTP/1.1 connection."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from bench.stack import open_demo_stack, open_diy_service


def _lines(body: bytes) -> list[dict[str, object]]:
    assert body.endswith(b"\n")
    return [json.loads(line) for line in body.splitlines()]


@pytest.mark.parametrize("server", ["hypercorn", "stdlib"])
async def test_both_servers_answer_the_same_ndjson(tmp_path: Path, server: str) -> None:
    async with (
        open_demo_stack(tmp_path / "stack", connector="none") as stack,
        open_diy_service(stack.direct, tmp_path / "diy", pool=2, server=server) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        answers = []
        for n in (7, 8):  # two requests: the stdlib server reuses the connection and the login
            reply = await client.post("/query", json={"sql": "SELECT @n AS n", "params": {"n": n}})
            assert reply.status_code == 200
            assert reply.http_version == "HTTP/1.1"
            assert reply.headers.get("connection") != "close"
            assert reply.headers["content-type"] == "application/x-ndjson"
            answers.append(_lines(reply.content))
        bad_sql = await client.post("/query", json={"sql": "SELECT * FROM no_such_table"})
        bad_body = await client.post("/query", content=b"{not json")

    for n, lines in zip((7, 8), answers, strict=True):
        columns, row, done = lines
        assert [(c["name"], c["type"]) for c in columns["columns"]] == [("n", "bigint")]  # type: ignore[index]
        assert row == [str(n)]  # a bigint, as text (JavaScript numbers lose precision)
        assert done["done"]["rows"] == 1  # type: ignore[index]
        assert done["done"]["result_sets"] == 1  # type: ignore[index]
    assert bad_sql.status_code == 200
    [error] = _lines(bad_sql.content)
    assert error["error"]["code"] == "sql.error"  # type: ignore[index]
    assert bad_body.status_code == 400
    [error] = _lines(bad_body.content)
    assert error["error"]["code"] == "request.invalid"  # type: ignore[index]
