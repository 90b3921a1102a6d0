"""tdslite/README.md "## T-SQL support": every row of the table is checked here.

Each row's Example (one T-SQL batch) runs on a fresh engine seeded with `--seed sample`, through
python-tds and through pyodbc over FreeTDS ODBC, logged in as an admin login: a `supported` row
must run without error (every result set read to its end), a `refused (NNN)` row must fail with
SQL Server error NNN. Every test its Tests column names must exist. Rows are handled generically:
adding a row to the table adds its checks here.
"""

from __future__ import annotations

import ast
import glob
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytds
import pytest

from tdslite import open_server
from tdslite.engine import Engine, load_users
from tests.tdslite._tds_helpers import PASSWORDS, in_thread

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "tdslite" / "README.md"
HEADER = "| Feature | Status | Example | Tests |"
_STATUS = re.compile(r"^(supported|refused \((\d+)\))$")
DRIVERS = sorted(glob.glob("/usr/lib/*/odbc/libtdsodbc.so"))


@dataclass(frozen=True)
class Row:
    feature: str
    status: str
    example: str
    tests: tuple[str, ...]

    @property
    def refused_with(self) -> int | None:
        match = _STATUS.match(self.status)
        return int(match.group(2)) if match and match.group(2) else None


def _cells(line: str) -> list[str]:
    # Split on pipes outside backticks (an Example may contain "|" in T-SQL).
    cells, current, in_code = [], "", False
    for char in line.strip().strip("|"):
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            cells.append(current.strip())
            current = ""
        else:
            current += char
    cells.append(current.strip())
    return cells


def parse_table(text: str) -> list[Row]:
    """The rows of the T-SQL support table (the one under HEADER in "## T-SQL support")."""
    lines = text.splitlines()
    section = lines.index("## T-SQL support")
    start = next(i for i in range(section, len(lines)) if lines[i].strip() == HEADER)
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip().startswith("|"):
            break
        feature, status, example, tests = _cells(line)
        assert example.startswith("`"), line
        assert example.endswith("`"), line
        rows.append(
            Row(
                feature,
                status,
                example[1:-1],
                tuple(t.strip().strip("`") for t in tests.split(",") if t.strip()),
            )
        )
    return rows


ROWS = parse_table(README.read_text(encoding="utf-8"))


def test_the_table_is_well_formed() -> None:
    assert len(ROWS) >= 20
    for row in ROWS:
        assert _STATUS.match(row.status), f"{row.feature}: status {row.status!r}"
        assert row.example.strip(), row.feature
        assert row.tests, f"{row.feature}: name at least one test"
    assert len({r.feature for r in ROWS}) == len(ROWS), "feature names must be unique"


def _defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(f"{node.name}::{item.name}")
    return names


def test_every_named_test_exists() -> None:
    missing = []
    for row in ROWS:
        for node_id in row.tests:
            path_text, _, name = node_id.partition("::")
            path = ROOT / path_text
            name = name.split("[", 1)[0]
            if not name or not path.is_file() or name not in _defined_tests(path):
                missing.append(f"{row.feature}: {node_id}")
    assert not missing, missing


# -- running the examples -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database file seeded with `sample` once; each example runs on a copy of it."""
    from tests.tdslite._tds_helpers import USERS_TOML

    folder = tmp_path_factory.mktemp("template")
    users = folder / "users.toml"
    users.write_text(USERS_TOML, encoding="utf-8")
    Engine(folder / "sample.sqlite", load_users(users), seed="sample").close()
    return folder


def _fresh(template: Path, tmp_path: Path) -> tuple[Path, Path]:
    db = tmp_path / "sample.sqlite"
    shutil.copy(template / "sample.sqlite", db)
    return db, template / "users.toml"


def _run_pytds(port: int, sql: str) -> int | None:
    """Run ``sql`` through python-tds, reading every result set; the error number or None."""
    conn = pytds.connect(
        dsn="127.0.0.1", port=port, user="admin", password=PASSWORDS["admin"], autocommit=True
    )
    try:
        cur = conn.cursor()
        try:
            cur.execute(sql)
            while True:
                if cur.description:
                    cur.fetchall()
                if not cur.nextset():
                    break
        except pytds.Error as exc:
            return int(getattr(exc, "msg_no", -1))
        return None
    finally:
        conn.close()


def _run_pyodbc(port: int, sql: str) -> int | None:
    """Run ``sql`` through pyodbc + FreeTDS ODBC, reading every result set."""
    import pyodbc

    dsn = (
        f"DRIVER={DRIVERS[0]};SERVER=127.0.0.1;PORT={port};UID=admin;"
        f"PWD={PASSWORDS['admin']};TDS_Version=7.4"
    )
    conn = pyodbc.connect(dsn, timeout=10, autocommit=True)
    conn.add_output_converter(-155, bytes)  # datetimeoffset: pyodbc itself has no converter
    try:
        cur = conn.cursor()
        try:
            cur.execute(sql)
            while True:
                if cur.description:
                    cur.fetchall()
                if not cur.nextset():
                    break
        except pyodbc.Error as exc:
            found = re.findall(r"\((\d+)\)", str(exc))
            return int(found[-1]) if found else -1
        return None
    finally:
        conn.close()


def _client_rows() -> Iterator[Any]:
    for row in ROWS:
        for client in ("pytds", "pyodbc"):
            marks = []
            if client == "pyodbc" and not DRIVERS:
                marks.append(
                    pytest.mark.skip(reason="FreeTDS ODBC missing: scripts/install-system-deps")
                )
            yield pytest.param(row, client, id=f"{client}-{row.feature}", marks=marks)


@pytest.mark.parametrize(("row", "client"), list(_client_rows()))
async def test_example(row: Row, client: str, seeded_template: Path, tmp_path: Path) -> None:
    db, users = _fresh(seeded_template, tmp_path)
    runner = _run_pytds if client == "pytds" else _run_pyodbc
    async with open_server(db=db, users=users, seed="sample") as server:
        error = await in_thread(runner, server.port, row.example, limit=60)
    assert error == row.refused_with, (
        f"{row.feature}: expected "
        f"{'no error' if row.refused_with is None else row.refused_with}, got {error}"
    )
