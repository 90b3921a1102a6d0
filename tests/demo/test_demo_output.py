"""The demo's formatting and response parsing, without processes (fast)."""

from __future__ import annotations

import io
import json

from edgetds._demo_output import Output, format_table
from edgetds._demo_story import parse_response


def test_table_aligns_numbers_right_and_text_left() -> None:
    columns = [{"name": "name", "type": "nvarchar"}, {"name": "total", "type": "decimal"}]
    lines = format_table(columns, [["Ada", "5.00"], ["Grace Hopper", "123.45"], [None, None]])
    assert lines == [
        "name           total",
        "------------  ------",
        "Ada             5.00",
        "Grace Hopper  123.45",
        "NULL            NULL",
    ]


def test_table_shortens_long_cells() -> None:
    lines = format_table([{"name": "sql", "type": "nvarchar"}], [["x" * 100]])
    assert lines[2] == "x" * 37 + "..."


def test_ndjson_answer_is_parsed_into_columns_rows_and_done() -> None:
    body = b"\n".join(
        json.dumps(line).encode()
        for line in (
            {"columns": [{"name": "n", "type": "int"}]},
            [1],
            [2],
            {"done": {"rows": 2, "result_sets": 1, "elapsed_ms": 3.5, "query_id": "q"}},
        )
    )
    result = parse_response(200, body + b"\n")
    assert result.rows == [[1], [2]]
    assert result.error is None
    assert result.describe() == "200 OK: 2 row(s) in 3.5 ms"


def test_error_body_and_truncated_stream_are_errors() -> None:
    refused = parse_response(403, b'{"error": {"code": "policy.denied", "message": "no role"}}')
    assert refused.code == "policy.denied"
    assert refused.describe() == "403 policy.denied: no role"
    truncated = parse_response(200, b'{"columns": [{"name": "n", "type": "int"}]}\n[1]\n')
    assert truncated.code == "demo.truncated"


def test_long_verdicts_wrap_with_a_hanging_indent() -> None:
    stream = io.StringIO()
    Output(stream).verdict(False, "word " * 40)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("  UNEXPECTED: word")
    assert all(len(line) <= 100 for line in lines)
    assert all(line.startswith("      word") for line in lines[1:])
