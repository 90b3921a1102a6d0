"""`edgetds tdslite serve` as a process: prints its address first, serves python-tds, writes the
statement log as JSON lines (never parameter values), stops cleanly on SIGTERM; bad options fail
with a message that says what to fix."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytds
import trio

from tests.support.processes import first_line
from tests.tdslite._tds_helpers import PASSWORDS, in_thread


async def test_serve_prints_address_logs_statements_and_stops(
    tmp_path: Path, tds_users_file: Path
) -> None:
    log_file = tmp_path / "statements.jsonl"
    cmd = [sys.executable, "-m", "edgetds", "tdslite", "serve", "--port", "0",
           "--db", str(tmp_path / "cli.sqlite"), "--users", str(tds_users_file),
           "--statement-log", str(log_file)]  # fmt: skip
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            proc: trio.Process = await nursery.start(
                partial(trio.run_process, cmd, stdout=subprocess.PIPE, check=False)
            )
            line = await first_line(proc)
            assert line.startswith("tdslite listening on 127.0.0.1:"), line
            port = int(line.rsplit(":", 1)[1])

            def query() -> list[tuple[object, ...]]:
                with (
                    pytds.connect("127.0.0.1", port=port, user="writer",
                                  password=PASSWORDS["writer"], autocommit=True, timeout=10)
                    as conn,
                    conn.cursor() as cur,
                ):  # fmt: skip
                    cur.execute("SELECT %s AS secret_value", ("hunter2-value",))
                    return [tuple(r) for r in cur.fetchall()]

            assert await in_thread(query) == [("hunter2-value",)]
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
    entries = [json.loads(x) for x in log_file.read_text().splitlines()]
    entry = next(e for e in entries if "secret_value" in e["statement"])
    assert entry["login"] == "writer"
    assert entry["params"] == [{"name": "@P1", "type": "nvarchar(max)"}]
    assert entry["outcome"] == {"rows": 1, "affected": 0}
    assert "hunter2-value" not in log_file.read_text()


async def test_serve_rejects_half_configured_options(tmp_path: Path, tds_users_file: Path) -> None:
    base = [sys.executable, "-m", "edgetds", "tdslite", "serve", "--port", "0",
            "--db", ":memory:", "--users", str(tds_users_file)]  # fmt: skip
    runs = {
        "tls": [*base, "--tls-cert", "x.pem"],
        "fed": [*base, "--fedauth-issuer", "https://idp"],
        "missing": [*base[:-1], str(tmp_path / "nope.toml")],
    }
    done: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def run(name: str) -> None:
        done[name] = await trio.run_process(runs[name], capture_stderr=True, check=False)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for name in runs:
                nursery.start_soon(run, name)
    tls, fed, missing = done["tls"], done["fed"], done["missing"]
    assert tls.returncode == 2
    assert b"--tls-cert and --tls-key go together" in tls.stderr
    assert fed.returncode == 2
    assert b"give all three" in fed.stderr
    assert missing.returncode == 1
    assert b"nope.toml" in missing.stderr
