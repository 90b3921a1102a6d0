"""FreeTDS `tsql` (Debian freetds-bin, an independent C client) against tdslite, real engine.

tsql is fed a script on stdin: connect, create and fill a table, read rows back, hit an error.
Run once in clear and once with FreeTDS's `encryption = require` (TLS inside PRELOGIN).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import trio

from tdslite import TdsServer, open_server
from tests.tdslite._tds_helpers import PASSWORDS

pytestmark = pytest.mark.skipif(
    shutil.which("tsql") is None, reason="FreeTDS tsql missing: run scripts/install-system-deps"
)

SCRIPT = """\
CREATE TABLE fruit (id int PRIMARY KEY, name nvarchar(20) NOT NULL, price decimal(6,2))
go
INSERT INTO fruit VALUES (1, N'apple', 1.25), (2, N'banana', 0.5), (3, N'cherry', NULL)
go
SELECT id, name, price FROM fruit ORDER BY id
go
SELECT * FROM no_such_table
go
SELECT COUNT(*) AS n FROM fruit
go
exit
"""


async def run_tsql(server: TdsServer, tmp_path: Path, *, encryption: str | None = None) -> str:
    env = dict(os.environ)
    if encryption is not None:
        conf = tmp_path / "freetds.conf"
        conf.write_text(f"[global]\n\tencryption = {encryption}\n")
        env["FREETDSCONF"] = str(conf)
    with trio.fail_after(20):
        proc = await trio.run_process(
            [
                "tsql",
                "-H",
                server.host,
                "-p",
                str(server.port),
                "-U",
                "admin",
                "-P",
                PASSWORDS["admin"],
            ],
            stdin=SCRIPT.encode(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )
    return (proc.stdout + proc.stderr).decode("utf-8", "replace")


def check_output(out: str) -> None:
    text = out.replace("\r", "").replace("1> ", "").replace("2> ", "")
    assert "id\tname\tprice\n1\tapple\t1.25\n2\tbanana\t0.50\n3\tcherry\tNULL\n" in text, out
    assert "(3 rows affected)" in text, out
    assert "Msg 208 (severity 16, state 1)" in text, out
    assert "Invalid object name 'no_such_table'." in text, out
    assert "n\n3\n(1 row affected)" in text, out


async def test_tsql_clear(tds_server: TdsServer, tmp_path: Path) -> None:
    out = await run_tsql(tds_server, tmp_path)
    check_output(out)
    statements = [e["statement"].strip() for e in tds_server.statement_log.entries]
    assert "SELECT id, name, price FROM fruit ORDER BY id" in statements


@pytest.mark.parametrize(
    "encryption",
    ["request", "require"],
    ids=["request-login-only-tls", "require-full-tls"],
)
async def test_tsql_with_tls_server(
    tmp_path: Path,
    tds_users_file: Path,
    tls_files: dict[str, str],
    encryption: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """FreeTDS's default "request" gets login-only encryption (PRELOGIN answer OFF), "require"
    gets the whole connection in TLS (answer ON)."""
    async with open_server(
        db=tmp_path / "tls.sqlite",
        users=tds_users_file,
        tls_cert=tls_files["cert"],
        tls_key=tls_files["key"],
    ) as server:
        with caplog.at_level(logging.DEBUG, logger="tdslite.server"):
            check_output(await run_tsql(server, tmp_path, encryption=encryption))
    expected = {"request": "client=OFF answer=OFF", "require": "client=ON answer=ON"}
    assert expected[encryption] in caplog.text


async def test_tsql_wrong_password_refused(tds_server: TdsServer) -> None:
    with trio.fail_after(20):
        proc = await trio.run_process(
            [
                "tsql",
                "-H",
                tds_server.host,
                "-p",
                str(tds_server.port),
                "-U",
                "admin",
                "-P",
                "nope",
            ],
            stdin=b"SELECT 1\ngo\nexit\n",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out = (proc.stdout + proc.stderr).decode()
    assert "Login failed for user 'admin'" in out, out
    assert proc.returncode != 0
