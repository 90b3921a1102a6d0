"""protocol/vectors/registry.json is what protocol/ declares, and SPEC.md's tables say the same."""

from __future__ import annotations

import json
import re
from pathlib import Path

from protocol import SQL_TYPE_TABLE, SQL_TYPES, SqlArgs, wire_registry

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = wire_registry()


def spec_table(heading: str) -> list[list[str]]:
    """The rows (cells stripped of backticks) of the first table after a SPEC.md heading."""
    text = (ROOT / "SPEC.md").read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        rows.append([cell.strip().replace("`", "") for cell in cells])
    return rows


def test_committed_file_is_what_protocol_declares() -> None:
    committed = json.loads((ROOT / "protocol" / "vectors" / "registry.json").read_text("utf-8"))
    assert committed == REGISTRY, "regenerate: .venv/bin/python tests/protocol/gen_vectors.py"


def test_spec_error_codes() -> None:
    rows = [(code, int(status)) for code, status, _ in spec_table("## 10. Error codes")]
    assert rows == [(e["code"], e["http_status"]) for e in REGISTRY["error_codes"]]


def test_spec_close_codes() -> None:
    rows = {name: int(code) for code, name, _ in spec_table("### 3.3 Close codes")}
    assert rows == REGISTRY["close_codes"]


def test_spec_frame_types() -> None:
    rows = {row[1]: int(row[0], 16) for row in spec_table("## 5. Frame types")}
    assert rows == REGISTRY["frame_types"]


def test_spec_sql_types() -> None:
    names = {
        name.strip()
        for row in spec_table("### 12.1 Result values")
        for name in re.sub(r"[()]|\band\b", ",", row[0]).split(",")
        if name.strip() and not name.strip().startswith(("NULL", "any type"))
    }
    assert names == SQL_TYPES == {row["name"] for row in REGISTRY["sql_types"]}


def test_sql_type_max_lengths() -> None:
    takes_max = {name for name, row in SQL_TYPE_TABLE.items() if row.takes_max}
    assert takes_max == {"varchar", "nvarchar", "varbinary"}
    lengths = {name: row.max_length for name, row in SQL_TYPE_TABLE.items()}
    assert {k for k, v in lengths.items() if v} == {
        name for name, row in SQL_TYPE_TABLE.items() if row.args is SqlArgs.LENGTH
    }
    assert lengths["nchar"] == lengths["nvarchar"] == 4000
    assert lengths["binary"] == lengths["varchar"] == 8000
