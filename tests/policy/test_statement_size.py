"""Policy: a per-role max_statement_bytes (UTF-8 bytes of the SQL text) refuses a longer ad-hoc
statement with request.too_large before any read-only check, the largest one is what READY
announces, and the read-only verdict can be computed elsewhere (off the event loop)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector._readonly import ReadOnlyVerdict
from connector.policy import Policy, PolicyError, QueryRequest
from tests.policy.test_policy import ident

SIZED = """
[roles.analyst]
match = { groups = ["analysts"] }
login = "reader"
allow_sql = true
max_statement_bytes = 100

[roles.admin]
match = { groups = ["admins"] }
login = "writer"
read_only = false
allow_sql = true
max_statement_bytes = 1000

[roles.reporter]
match = { groups = ["reporters"] }
login = "reader"
"""


@pytest.fixture
def sized() -> Policy:
    import tomllib

    return Policy.from_dict(tomllib.loads(SIZED), source="policy.toml")


def test_longer_statements_are_refused_per_role(sized: Policy) -> None:
    analyst, both = ident(groups=["analysts"]), ident(groups=["analysts", "admins"])
    select = "SELECT n FROM t WHERE x = 'é" + "é" * 40 + "'"  # 2 UTF-8 bytes per é
    assert len(select) <= 100 < len(select.encode())
    refused = sized.authorize(analyst, QueryRequest(sql=select))
    assert (refused.allowed, refused.code) == (False, "request.too_large")
    assert "up to 100 bytes" in refused.reason
    assert f"this one is {len(select.encode())}" in refused.reason
    assert "é" not in refused.reason  # no SQL text in the message
    # the next matching role with room for it runs it
    chosen = sized.authorize(both, QueryRequest(sql=select))
    assert chosen.allowed
    assert chosen.role is not None
    assert chosen.role.name == "admin"
    assert sized.authorize(analyst, QueryRequest(sql="SELECT 1")).allowed
    # a lone surrogate (valid in JSON) counts as its 3 bytes instead of raising
    assert QueryRequest(sql="\ud800").sql_bytes == 3


def test_the_largest_limit_is_announced_and_defaults_apply(sized: Policy) -> None:
    assert sized.max_statement_bytes == 1000
    reporter = next(r for r in sized.roles if r.name == "reporter")
    assert reporter.max_statement_bytes == 256 * 1024
    assert "statements up to 100 bytes" in sized.roles[0].summary()
    assert Policy([], [], source="none").max_statement_bytes == 256 * 1024


def test_only_a_statement_some_read_only_role_takes_needs_the_check(sized: Policy) -> None:
    analyst, admin = ident(groups=["analysts"]), ident(groups=["admins"])
    assert sized.needs_read_only_check(analyst, QueryRequest(sql="SELECT 1"))
    assert not sized.needs_read_only_check(analyst, QueryRequest(sql="SELECT " + "1" * 200))
    assert not sized.needs_read_only_check(admin, QueryRequest(sql="SELECT 1"))
    assert not sized.needs_read_only_check(ident(groups=["nobody"]), QueryRequest(sql="SELECT 1"))
    assert not sized.needs_read_only_check(ident(groups=["reporters"]), QueryRequest(sql="X"))
    assert not sized.needs_read_only_check(analyst, QueryRequest(query="q"))


def test_a_verdict_computed_elsewhere_is_used(sized: Policy) -> None:
    analyst = ident(groups=["analysts"])
    request = QueryRequest(sql="SELECT 1")
    no = ReadOnlyVerdict(False, "statement contains DELETE")
    decision = sized.authorize(analyst, request, read_only=no)
    assert (decision.allowed, decision.code) == (False, "policy.not_read_only")
    assert sized.authorize(analyst, request, read_only=ReadOnlyVerdict(True, "")).allowed


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("0", "key 'max_statement_bytes': a positive integer"),
        ("true", "key 'max_statement_bytes': a positive integer"),
        ('"1MB"', "key 'max_statement_bytes': a positive integer"),
        ("16777217", "key 'max_statement_bytes': at most 16777216"),
    ],
)
def test_bad_limits_are_named(tmp_path: Path, value: str, problem: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        f'[roles.a]\nmatch = {{ groups = ["x"] }}\nlogin = "r"\nmax_statement_bytes = {value}\n'
    )
    with pytest.raises(PolicyError, match=rf"\[roles.a\] {problem}"):
        Policy.load(path)
