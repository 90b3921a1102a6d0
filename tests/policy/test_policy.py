"""Policy: role matching by claim paths, deny beats allow, deterministic choice, templates."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import trio

from connector.policy import Policy, PolicyError, QueryRequest
from edgetds.devidp import open_dev_idp
from identity.oidc import Identity, IssuerConfig, TokenVerifier

ISS = "https://idp.example"
OTHER = "https://other.example"

POLICY = f"""
[[deny]]
match = {{ groups = ["contractors"] }}
reason = "contractors have no database access"

[[deny]]
match = {{ sub = ["mallory"] }}

[roles.reporter]
match = {{ scp = {{ values = ["reports.read"], split = "space" }} }}
login = "reports"
[roles.reporter.queries.orders_by_customer]
sql = "SELECT id, total FROM orders WHERE customer_id = @cid"
params = {{ cid = "int" }}

[roles.analyst]
login = "reader"
read_only = true
allow_sql = true
max_rows = 1000
timeout_ms = 5000

[roles.analyst.match]
groups = ["analysts"]
"realm_access.roles" = ["analyst"]
"https://example.com/roles" = ["analyst"]

[roles.analyst.queries.top_customers]
sql = "SELECT TOP (@n) customer_id FROM orders GROUP BY customer_id"
params = {{ n = "int" }}

[roles.admin]
match = {{ groups = ["admins"] }}
issuers = ["{ISS}"]
login = "writer"
read_only = false
allow_sql = true
log_param_values = true
"""


def ident(sub: str = "alice", *, iss: str = ISS, **claims: Any) -> Identity:
    full = {"sub": sub, "iss": iss, "aud": "edgetds", "exp": 2_000_000_000, **claims}
    return Identity(
        subject=sub,
        issuer=iss,
        audience=("edgetds",),
        claims=MappingProxyType(full),
        token_sha256=hashlib.sha256(sub.encode()).hexdigest(),
        expires_at=2_000_000_000,
        algorithm="RS256",
        key_id="k",
    )


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    return Policy.load(path)


def sql(text: str, **params: Any) -> QueryRequest:
    return QueryRequest(sql=text, params=params)


def test_analyst_reads_but_cannot_write(policy: Policy) -> None:
    alice = ident(groups=["analysts"])
    ok = policy.authorize(alice, sql("SELECT * FROM orders WHERE id = @id", id=1))
    assert ok.allowed
    assert ok.role is not None
    assert ok.role.name == "analyst"
    assert ok.role.login == "reader"
    assert ok.sql == "SELECT * FROM orders WHERE id = @id"
    assert ok.limits(max_rows=50_000, timeout_ms=None) == (1000, 64 * 1024 * 1024, 5000)
    assert ok.limits(max_rows=10, timeout_ms=100) == (10, 64 * 1024 * 1024, 100)
    no = policy.authorize(alice, sql("DELETE FROM orders WHERE id = @id", id="1; DROP TABLE x"))
    assert not no.allowed
    assert no.code == "policy.not_read_only"
    assert "DELETE" in no.reason
    assert "DROP TABLE x" not in no.reason


@pytest.mark.parametrize(
    "claims",
    [
        {"groups": ["analysts"]},
        {"realm_access": {"roles": ["analyst"]}},
        {"https://example.com/roles": ["analyst"]},
        {"groups": "analysts"},  # one string: matched whole
    ],
)
def test_claim_paths(policy: Policy, claims: dict[str, Any]) -> None:
    decision = policy.authorize(ident(**claims), sql("SELECT 1"))
    assert decision.allowed
    assert decision.role is not None
    assert decision.role.name == "analyst"


def test_scope_string_claim_and_named_queries(policy: Policy) -> None:
    rep = ident("rita", scp="openid reports.read profile")
    ok = policy.authorize(rep, QueryRequest(query="orders_by_customer", params={"cid": 7}))
    assert ok.allowed
    assert ok.role is not None
    assert ok.role.name == "reporter"
    assert ok.sql == "SELECT id, total FROM orders WHERE customer_id = @cid"
    assert ok.query == "orders_by_customer"
    assert dict(ok.param_types) == {"cid": "int"}
    adhoc = policy.authorize(rep, sql("SELECT 1"))
    assert (adhoc.allowed, adhoc.code) == (False, "policy.denied")
    assert "named queries only" in adhoc.reason
    unknown = policy.authorize(rep, QueryRequest(query="drop_everything"))
    assert unknown.code == "policy.unknown_query"
    wrong = policy.authorize(rep, QueryRequest(query="orders_by_customer", params={"x": "1'--"}))
    assert wrong.code == "request.invalid"
    assert "missing ['cid']" in wrong.reason
    assert "1'--" not in wrong.reason


def test_deny_beats_allow(policy: Policy) -> None:
    for who in (ident(groups=["analysts", "contractors"]), ident("mallory", groups=["admins"])):
        decision = policy.authorize(who, sql("SELECT 1"))
        assert (decision.allowed, decision.code) == (False, "policy.denied")
        assert "deny rule" in decision.reason
    assert (
        "contractors have no database access"
        in policy.authorize(ident(groups=["contractors"]), sql("SELECT 1")).reason
    )


def test_least_privilege_first_then_escalate(policy: Policy) -> None:
    both = ident("bob", groups=["analysts", "admins"])
    read = policy.authorize(both, sql("SELECT 1"))
    assert read.role is not None
    assert read.role.name == "analyst"
    write = policy.authorize(both, sql("DELETE FROM orders WHERE id = 1"))
    assert write.allowed
    assert write.role is not None
    assert write.role.name == "admin"
    # Admin-only: writes allowed; named query of another role unknown to admin.
    admin = ident("ann", groups=["admins"])
    assert policy.authorize(admin, sql("UPDATE t SET x = 1")).allowed
    assert policy.authorize(admin, QueryRequest(query="top_customers")).code == (
        "policy.unknown_query"
    )


def test_issuer_scoped_role(policy: Policy) -> None:
    # "admins" from another issuer is not our admins group.
    other = ident("eve", iss=OTHER, groups=["admins"])
    decision = policy.authorize(other, sql("SELECT 1"))
    assert (decision.allowed, decision.code) == (False, "policy.denied")
    assert "no role matches" in decision.reason


def test_no_match_and_bad_requests(policy: Policy) -> None:
    nobody = ident("zed", groups=["sales"])
    assert policy.authorize(nobody, sql("SELECT 1")).code == "policy.denied"
    alice = ident(groups=["analysts"])
    assert policy.authorize(alice, QueryRequest()).code == "request.invalid"
    both = QueryRequest(sql="SELECT 1", query="top_customers")
    assert policy.authorize(alice, both).code == "request.invalid"


def test_explain(policy: Policy) -> None:
    text = policy.explain(ident("bob", groups=["analysts", "admins"]))
    assert "role analyst: MATCH via groups=analysts  <- first match" in text
    assert "role admin: MATCH via groups=admins" in text
    assert (
        "role reporter: no match (needs one of scp in ['reports.read'] (split on spaces))" in text
    )
    assert "claim groups: ['admins', 'analysts']" in text
    denied = policy.explain(ident("carl", groups=["contractors", "analysts"]))
    assert "DENIED by deny rule #1" in denied
    assert "every query is refused" in denied
    other = policy.explain(ident("eve", iss=OTHER, groups=["admins"]))
    assert f"role admin: no match (only for issuers ['{ISS}'])" in other


def test_load_errors_name_file_table_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        """
[roles.a]
match = { groups = [] }
login = "r"
max_rows = -1
password = "hunter2"

[roles.b]
match = { groups = ["x"] }
read_only = "yes"
queries.q = { sql = "DELETE FROM t WHERE id = @id", params = { id = "int", other = "int" } }

[[deny]]
match = "admins"
"""
    )
    with pytest.raises(PolicyError) as info:
        Policy.load(path)
    text = str(info.value)
    for expected in (
        f"{path}: [roles.a] key 'match.groups': a non-empty list",
        f"{path}: [roles.a] key 'max_rows': a positive integer",
        "[roles.a] unknown key 'password'",
        "credentials belong in connector.toml [logins.NAME]",
        f"{path}: [roles.b] key 'login'",
        "[roles.b] key 'read_only': true or false",
        "[roles.b.queries.q] key 'params.other': @other does not occur in sql",
        "[roles.b.queries.q] key 'sql': the role is read_only but statement contains DELETE",
        "[deny #1] key 'match'",
    ):
        assert expected in text, (expected, text)
    assert "hunter2" not in text
    (tmp_path / "x.toml").write_text("[roles")
    with pytest.raises(PolicyError, match="not valid TOML"):
        Policy.load(tmp_path / "x.toml")
    with pytest.raises(PolicyError, match="cannot read"):
        Policy.load(tmp_path / "missing.toml")


def test_inline_policy_prefix() -> None:
    with pytest.raises(PolicyError, match=r"connector.toml: \[policy.roles.a\] key 'login'"):
        Policy.from_dict(
            {"roles": {"a": {"match": {"groups": ["g"]}}}},
            source="connector.toml",
            prefix="policy.",
        )
    pol = Policy.from_dict(
        {"roles": {"a": {"match": {"groups": ["g"]}, "login": "r"}}}, source="c.toml"
    )
    assert pol.logins() == {"r"}
    role = pol.roles[0]
    assert (role.read_only, role.allow_sql, role.log_param_values) == (True, False, False)


async def test_real_token_through_verifier_and_policy(policy: Policy) -> None:
    with trio.fail_after(10):
        async with open_dev_idp() as idp:
            cfg = IssuerConfig(issuer=idp.issuer, audiences=("edgetds",))
            async with TokenVerifier([cfg]) as verifier:
                alice = await verifier.verify(idp.mint(sub="alice", groups=["analysts"]))
                admin = await verifier.verify(idp.mint(sub="ann", groups=["admins"]))
    assert policy.authorize(alice, sql("SELECT 1")).allowed
    assert policy.authorize(alice, sql("DELETE FROM t")).code == "policy.not_read_only"
    # The dev IdP is not the issuer the admin role is scoped to.
    assert policy.authorize(admin, sql("SELECT 1")).code == "policy.denied"
