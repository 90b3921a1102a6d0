"""NDJSON stream checking (split by newline, never by chunk), loopback guard, --direct parsing."""

from __future__ import annotations

import json

import pytest

from edgetds.loadtest.targets import (
    NdjsonCounter,
    TargetError,
    TokenSource,
    check_loopback,
    parse_direct,
)

COLUMNS = b'{"columns":[{"name":"n","type":"int"}]}\n'
ROWS = b"".join(b'[%d,"x{y}\\n"]\n' % i for i in range(5))
DONE = b'{"done":{"rows":5,"result_sets":1,"elapsed_ms":1.5,"query_id":"q"}}\n'


def feed(body: bytes, step: int | None) -> NdjsonCounter:
    counter = NdjsonCounter()
    if step is None:
        counter.feed(body)
    else:
        for i in range(0, len(body), step):
            counter.feed(body[i : i + step])
    return counter


@pytest.mark.parametrize("step", [None, 1, 3, 17])
def test_complete_stream_counts_rows(step: int | None) -> None:
    body = COLUMNS + ROWS + DONE
    outcome = feed(body, step).outcome(len(body))
    assert outcome.ok
    assert outcome.rows == 5
    assert outcome.nbytes == len(body)


@pytest.mark.parametrize("step", [None, 1, 7])
def test_missing_terminal_is_truncated(step: int | None) -> None:
    assert feed(COLUMNS + ROWS, step).outcome(0).code == "truncated"
    # a terminal line without its newline is not a complete record either
    assert feed(COLUMNS + ROWS + DONE[:-1], step).outcome(0).code == "truncated"


def test_error_terminal_gives_its_code() -> None:
    error = {"error": {"code": "query.timeout", "message": "too slow", "query_id": "q"}}
    body = COLUMNS + ROWS[: ROWS.index(b"\n") + 1] + json.dumps(error).encode() + b"\n"
    outcome = feed(body, 4).outcome(len(body))
    assert outcome.code == "query.timeout"


def test_rows_mismatch_and_garbage_after_terminal() -> None:
    assert feed(COLUMNS + ROWS[: ROWS.index(b"\n") + 1] + DONE, 5).outcome(0).code == (
        "client.rows_mismatch"
    )
    assert feed(COLUMNS + ROWS + DONE + b"[1]\n", 5).outcome(0).code == "client.bad_ndjson"
    assert feed(COLUMNS + b"{not json}\n" + DONE, 5).outcome(0).code == "client.bad_ndjson"


def test_loopback_guard() -> None:
    for host in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"):
        check_loopback(host, what="--target", allow_remote=False)
    for host in ("10.0.0.1", "example.com", "0.0.0.0"):
        with pytest.raises(TargetError, match="--allow-remote"):
            check_loopback(host, what="--target", allow_remote=False)
    check_loopback("10.0.0.1", what="--target", allow_remote=True)


def test_parse_direct(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = parse_direct("host=127.0.0.1;port=1500;user=reader;password=pw;database=sample")
    assert (spec.host, spec.port, spec.user, spec.password, spec.database) == (
        "127.0.0.1",
        1500,
        "reader",
        "pw",
        "sample",
    )
    assert "pw" not in repr(spec)
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    assert parse_direct(f"host=h;user=u;password=@{secret}").password == "from-file"
    with pytest.raises(TargetError, match="user= is missing"):
        parse_direct("host=h")
    with pytest.raises(TargetError, match="bad item 'hots'"):
        parse_direct("hots=h;user=u")
    with pytest.raises(TargetError, match="port= must be a number"):
        parse_direct("host=h;user=u;port=x")


def test_token_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "tokens.txt"
    path.write_text("# comment\n\naaa\nbbb\n")
    tokens = TokenSource.from_file(path)
    assert [tokens.for_vu(i) for i in range(3)] == ["aaa", "bbb", "aaa"]
    path.write_text("\n# nothing\n")
    with pytest.raises(TargetError, match="no tokens"):
        TokenSource.from_file(path)
    with pytest.raises(TargetError, match="cannot read"):
        TokenSource.from_file(tmp_path / "absent")


def test_request_body_is_the_compact_json_of_the_query() -> None:
    import random

    from edgetds.loadtest import parse_scenario
    from edgetds.loadtest.targets import _encode

    scenario = parse_scenario(
        {
            "name": "bodies",
            "load": {"count": 1},
            "queries": [
                {
                    "name": "q",
                    "sql": "SELECT @n, @f, @s, @c",
                    "max_rows": 5,
                    "params": {
                        "n": {"int": [-5, 1_000_000]},
                        "f": {"float": [-1.5, 1e6]},
                        "s": {"string": "??##**"},
                        "c": {"choice": ["a", 'q"uo\\te', 3]},
                    },
                }
            ],
        }
    )
    [query] = scenario.queries
    for seed in range(200):
        body = query.http_body(random.Random(seed))
        encoded = _encode(body)
        assert json.loads(encoded) == body
        assert encoded == json.dumps(body, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "line",
    [
        b'{"done":{"rows":1,"elapsed_ms":0.4}}',
        b'{"error":{"code":"sql.error","message":"caf\\u00e9 \xc3\xa9"}}',
        b'{"done":{"rows":123456789012345678901234567890}}',
        b'{"done":{"rows":1e400}}',
        b'{"done":NaN}',
        b'{"done":"\\ud800"}',
        b'{"done":1,"done":2}',
    ],
)
def test_terminal_lines_decode_as_json_loads_does(line: bytes) -> None:
    from edgetds.loadtest.targets import _loads

    decoded, expected = _loads(line), json.loads(line)
    assert json.dumps(decoded) == json.dumps(expected)
    assert type(decoded["done" if "done" in decoded else "error"]) is type(
        expected["done" if "done" in expected else "error"]
    )


@pytest.mark.parametrize("line", [b'{"done":1} x', b'{"done":', b"{'done':1}", b"\xff"])
def test_lines_json_loads_refuses_are_refused(line: bytes) -> None:
    from edgetds.loadtest.targets import _loads

    refused = (json.JSONDecodeError, UnicodeDecodeError)  # json.loads's own errors
    with pytest.raises(refused):
        json.loads(line)
    with pytest.raises(refused):
        _loads(line)
