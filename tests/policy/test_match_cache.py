"""The policy remembers which roles match an Identity object: attacks on that memory.

The memory is keyed on the Identity object itself. Each test here would pass a wrong result
through a memory keyed on anything else (subject, issuer, token hash), shared between policies,
or one that skipped the per-statement checks.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from connector import policy as policy_module
from connector.policy import Policy, QueryRequest
from tests.policy.test_policy import POLICY, ident


def sql(text: str) -> QueryRequest:
    return QueryRequest(sql=text)


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    return Policy.load(path)


def test_same_subject_and_token_hash_with_other_claims_is_matched_afresh(policy: Policy) -> None:
    # ident() gives both the same subject, issuer and token_sha256: only the claims differ
    admin, analyst = ident("alice", groups=["admins"]), ident("alice", groups=["analysts"])
    assert admin.token_sha256 == analyst.token_sha256
    wrote = policy.authorize(admin, sql("DELETE FROM orders"))
    assert wrote.allowed
    assert wrote.role is not None
    assert wrote.role.name == "admin"
    refused = policy.authorize(analyst, sql("DELETE FROM orders"))
    assert (refused.allowed, refused.code) == (False, "policy.not_read_only")
    # and the other way round, on a fresh policy
    fresh = Policy.from_dict(tomllib.loads(POLICY), source="again")
    assert not fresh.authorize(analyst, sql("DELETE FROM orders")).allowed
    assert fresh.authorize(admin, sql("DELETE FROM orders")).allowed


def test_every_statement_is_still_checked_for_a_remembered_identity(policy: Policy) -> None:
    analyst = ident("carol", groups=["analysts"])
    first = policy.authorize(analyst, sql("SELECT 1"))
    assert first.allowed
    assert first.role is not None
    assert first.role.name == "analyst"
    assert policy.needs_read_only_check(analyst, sql("SELECT 1"))
    # same identity object, remembered roles: the write is refused by the statement check
    refused = policy.authorize(analyst, sql("UPDATE orders SET total = 0"))
    assert (refused.allowed, refused.code) == (False, "policy.not_read_only")
    assert policy.authorize(analyst, sql("SELECT 1")).allowed
    # the same statement text for another identity runs under that identity's role
    admin = ident("dave", groups=["admins"])
    write = policy.authorize(admin, sql("UPDATE orders SET total = 0"))
    assert write.role is not None
    assert write.role.name == "admin"
    assert not policy.needs_read_only_check(admin, sql("UPDATE orders SET total = 0"))
    again = policy.authorize(analyst, sql("UPDATE orders SET total = 0"))
    assert (again.allowed, again.code) == (False, "policy.not_read_only")


def test_a_remembered_refusal_still_refuses_and_the_request_shape_is_checked(
    policy: Policy,
) -> None:
    contractor = ident("erin", groups=["analysts", "contractors"])
    for _ in range(2):
        decision = policy.authorize(contractor, sql("SELECT 1"))
        assert (decision.allowed, decision.code) == (False, "policy.denied")
        assert "deny rule" in decision.reason
    analyst = ident("frank", groups=["analysts"])
    assert policy.authorize(analyst, sql("SELECT 1")).allowed
    both = QueryRequest(sql="SELECT 1", query="top_customers")
    assert policy.authorize(analyst, both).code == "request.invalid"


def test_a_reloaded_policy_remembers_nothing_of_the_old_one(policy: Policy) -> None:
    analyst = ident("grace", groups=["analysts"])
    assert policy.authorize(analyst, sql("SELECT 1")).allowed
    stricter = POLICY + '\n[[deny]]\nmatch = { groups = ["analysts"] }\nreason = "audit week"\n'
    reloaded = Policy.from_dict(tomllib.loads(stricter), source="reloaded")
    decision = reloaded.authorize(analyst, sql("SELECT 1"))
    assert (decision.allowed, decision.code) == (False, "policy.denied")
    assert "audit week" in decision.reason
    assert policy.authorize(analyst, sql("SELECT 1")).allowed


def test_the_memory_is_bounded_and_forgets_the_oldest(
    policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(policy_module, "MATCH_CACHE_SIZE", 3)
    people = [ident(f"user{n}", groups=["analysts"]) for n in range(5)]
    for who in people:
        assert policy.authorize(who, sql("SELECT 1")).allowed
    remembered = policy._matched
    assert len(remembered) == 3
    assert list(remembered) == people[2:]
    # a forgotten identity is matched again, and decided the same way
    assert policy.authorize(people[0], sql("SELECT 1")).allowed
    assert list(remembered) == [*people[3:], people[0]]
