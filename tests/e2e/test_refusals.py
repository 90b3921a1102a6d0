"""Refusals end to end: bad tokens stop at the relay, policy refusals at the connector, and
neither reaches SQL Server (tdslite's statement log is unchanged). SQL errors carry their number."""

from __future__ import annotations

import json

import pytest
import trio

from edgetds.devidp import DevIdP
from tests.support.e2e_stack import Stack


async def test_sql_error_surfaces_with_its_number(stack: Stack) -> None:
    with trio.fail_after(20):
        resp = await stack.query("SELECT * FROM no_such_table")
    assert resp.status == 422
    err = resp.terminal["error"]
    assert err["code"] == "sql.error"
    assert err["sql"]["number"] == 208
    assert err["sql"]["class"] == 16
    # the pooled connection is still usable after the error
    with trio.fail_after(20):
        again = await stack.query("SELECT COUNT(*) AS c FROM notes")
    assert again.rows == [[2]]


@pytest.mark.parametrize(
    ("sql", "groups", "status", "code"),
    [
        ("DELETE FROM notes", ["analysts"], 403, "policy.not_read_only"),
        ("SELECT * INTO copy FROM notes", ["analysts"], 403, "policy.not_read_only"),
        ("IF 1 = 1 DELETE FROM notes", ["analysts"], 403, "policy.not_read_only"),
        ("SELECT 1; DELETE FROM notes", ["analysts"], 403, "policy.not_read_only"),
        ("EXECUTE AS USER = 'dbo'; SELECT 1", ["analysts"], 403, "policy.not_read_only"),
        # T-SQL reads a lone # as a name and needs no ";": these ran a second statement
        (
            "SELECT 1 # DELETE FROM customers WHERE id = 1",
            ["analysts"],
            403,
            "policy.not_read_only",
        ),
        ("SELECT 1 # REVERT", ["analysts"], 403, "policy.not_read_only"),
        ("SELECT 1 # SHUTDOWN", ["analysts"], 403, "policy.not_read_only"),
        ("SELECT 1 #\nDELETE FROM orders WHERE id = 1", ["analysts"], 403, "policy.not_read_only"),
        ("SELECT 0x1SHUTDOWN", ["analysts"], 403, "policy.not_read_only"),
        ("SELECT $DELETE FROM notes", ["analysts"], 403, "policy.not_read_only"),
        # sqlglot counts the "/" of "*/*" again as an opener: one SELECT to it, three to SQL Server
        (
            'SELECT 1 /* /* */* */ DELETE FROM notes SELECT 2 AS "*/" -- "',
            ["analysts"],
            403,
            "policy.not_read_only",
        ),
        ("SELECT * FROM srv.db.dbo.notes", ["analysts"], 403, "policy.not_read_only"),
        ("SELECT id FROM notes", ["contractors", "analysts"], 403, "policy.denied"),
        ("SELECT id FROM notes", ["nobody"], 403, "policy.denied"),
    ],
)
async def test_policy_refusals_never_reach_the_database(
    stack: Stack, sql: str, groups: list[str], status: int, code: str
) -> None:
    before = list(stack.statements())
    with trio.fail_after(20):
        resp = await stack.query(sql, token=stack.token(groups=groups))
    assert resp.status == status
    assert resp.terminal["error"]["code"] == code
    assert stack.statements() == before
    assert stack.connector.service.counts.get(code) == 1


async def test_tokens_refused_at_the_relay_never_reach_connector_or_database(
    stack: Stack,
) -> None:
    good = stack.token()
    head, payload, sig = good.split(".")
    stranger = DevIdP([])
    stranger.issuer = "http://127.0.0.1:9/unknown"
    cases = {
        "auth.expired": stack.token(expires_in=-120),
        "auth.wrong_audience": stack.token(aud="someone-else"),
        "auth.unknown_issuer": stranger.mint(sub="alice", groups=["analysts"]),
        "auth.invalid_token": f"{head}.{payload[:-3]}abc.{sig}",
    }
    before = list(stack.statements())
    with trio.fail_after(30):
        for code, token in cases.items():
            resp = await stack.query("SELECT id FROM notes", token=token)
            assert resp.status == 401, code
            assert resp.terminal["error"]["code"] == code
    assert stack.statements() == before
    assert stack.connector.service.counts == {}


async def test_named_query_and_admin_write(stack: Stack) -> None:
    with trio.fail_after(20):
        named = await stack.query(None, query="echo_int", params={"n": 5})
        assert named.status == 200
        assert named.rows == [[5]]
        wrong = await stack.query(None, query="echo_int", params={"m": 5})
        assert wrong.status == 400
        unknown = await stack.query(None, query="nope", params={})
        assert unknown.terminal["error"]["code"] == "policy.unknown_query"
        admin = stack.token(sub="root", groups=["admins"])
        write = await stack.query(
            "INSERT INTO notes (id, body) VALUES (@id, @body)",
            token=admin,
            params={"id": {"type": "int", "value": 3}, "body": "third"},
        )
        assert write.status == 200, write.lines
        assert write.terminal["done"]["rows_affected"] == 1
        check = await stack.query("SELECT body FROM notes WHERE id = 3")
        assert check.rows == [["third"]]
    # the audit log is a valid chain with the admin's parameter values (policy allows) and
    # without the analysts' ones
    from connector.audit import verify_files

    audit = stack.workdir / "connector" / "audit.jsonl"
    assert verify_files([audit]).ok
    text = audit.read_text()
    assert '"value":"third"' in text
    assert good_token_not_in(text, stack)


def good_token_not_in(text: str, stack: Stack) -> bool:
    return "eyJ" not in text  # no JWT (base64url JSON header) anywhere in the audit log


async def test_max_rows_ends_with_a_typed_error_not_silent_truncation(stack: Stack) -> None:
    with trio.fail_after(20):
        resp = await stack.query("SELECT n FROM d ORDER BY n", max_rows=5)
    assert resp.status == 200  # rows were already streaming
    assert len(resp.rows) == 5
    assert resp.terminal["error"]["code"] == "limits.result_too_large"
    with trio.fail_after(20):
        fits = await stack.query("SELECT n FROM d ORDER BY n", max_rows=10)
    assert len(fits.rows) == 10
    assert fits.terminal["done"]["rows"] == 10


async def test_max_bytes_cap_of_the_role(stack: Stack) -> None:
    tiny = stack.token(sub="t", groups=["tiny"])
    with trio.fail_after(20):
        small = await stack.query("SELECT n FROM d WHERE n < 3 ORDER BY n", token=tiny)
        big = await stack.query("SELECT n, N'0123456789abcdef' AS s FROM d", token=tiny)
    assert small.terminal["done"]["rows"] == 3
    assert big.terminal["error"]["code"] == "limits.result_too_large"
    assert "max_bytes" in big.terminal["error"]["message"]


async def test_an_unexpected_failure_is_audited_as_internal_not_ok(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fault injection: the role's pool cannot be taken (a failure no code path expects)
    class BrokenPools(dict):  # type: ignore[type-arg]
        def __getitem__(self, login: str) -> None:
            raise RuntimeError("injected failure")

    monkeypatch.setattr(stack.connector.service, "pools", BrokenPools())
    before = list(stack.statements())
    with trio.fail_after(20):
        resp = await stack.query("SELECT id FROM notes")
    assert resp.terminal["error"]["code"] == "internal"
    assert b"injected" not in resp.raw
    assert stack.statements() == before
    assert stack.connector.service.counts == {"internal": 1}
    from connector.audit import verify_files

    audit = stack.workdir / "connector" / "audit.jsonl"
    assert verify_files([audit]).ok
    last = json.loads(audit.read_text().splitlines()[-1])
    assert last["outcome"]["status"] != "ok", last["outcome"]
    assert last["outcome"]["error_code"] == "internal"
