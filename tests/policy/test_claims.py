"""How policy reads claims: list members and strings matched whole, splitting only when the policy
says so, exact role matches vs wide deny matches, and claims of an unusable shape refused.

Tokens are real: minted by the dev IdP, fetched keys over HTTP, verified by identity/oidc.py.
"""

from __future__ import annotations

import base64
import json
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import trio

from connector.policy import Policy, PolicyError, QueryRequest
from edgetds.cli import main
from edgetds.devidp import DevIdP, open_dev_idp
from identity.oidc import Identity, IssuerConfig, TokenVerifier

POLICY = """
[[deny]]
match = { groups = ["contractors"], tier = [7], "org.status" = ["suspended"] }
reason = "contractors have no database access"

[roles.reader]
match = { groups = ["finance admins", "Zürich"], scope = { values = ["db.read"], split = "space" } }
login = "reader"
allow_sql = true

[roles.admin]
match = { groups = ["admins"], tenant = [42] }
login = "writer"
read_only = false
allow_sql = true
"""

SELECT = QueryRequest(sql="SELECT 1")


@pytest.fixture
def policy() -> Policy:
    return Policy.from_dict(tomllib.loads(POLICY), source="policy.toml")


@pytest.fixture
async def idp() -> AsyncIterator[DevIdP]:
    async with open_dev_idp() as served:
        yield served


async def verified(idp: DevIdP, **claims: Any) -> Identity:
    """A real token with these claims, verified like the connector does."""
    cfg = IssuerConfig(issuer=idp.issuer, audiences=("edgetds",))
    with trio.fail_after(10):
        async with TokenVerifier([cfg]) as verifier:
            return await verifier.verify(idp.mint(sub="u", extra_claims=claims))


def role_of(policy: Policy, identity: Identity) -> str | None:
    decision = policy.authorize(identity, SELECT)
    return decision.role.name if decision.allowed and decision.role else None


async def test_group_with_a_space_is_one_name(policy: Policy, idp: DevIdP) -> None:
    # `edgetds dev-idp token --groups "finance admins"` puts ONE group "finance admins" in the
    # token: it must not also match the admins role (it did, when every string was split).
    for groups in (["finance admins"], ["not admins"], "finance admins", "admins finance"):
        ident = await verified(idp, groups=groups)
        assert role_of(policy, ident) != "admin", groups
    assert role_of(policy, await verified(idp, groups=["finance admins"])) == "reader"
    assert role_of(policy, await verified(idp, groups="finance admins")) == "reader"
    assert role_of(policy, await verified(idp, groups="admins")) == "admin"
    assert role_of(policy, await verified(idp, groups=["admins"])) == "admin"


def test_dev_idp_cli_groups_stay_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Comma-separated; each name kept whole, whitespace around the commas dropped.
    key_dir = tmp_path / "idp"
    DevIdP([], issuer="https://idp.invalid", key_dir=key_dir).save()
    argv = ["dev-idp", "token", "--sub", "a", "--groups", "finance admins, ops ,"]
    assert main([*argv, "--key-dir", str(key_dir), "--issuer", "https://idp.invalid"]) == 0
    payload = capsys.readouterr().out.strip().split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    assert claims["groups"] == ["finance admins", "ops"]


async def test_split_only_where_the_policy_says(policy: Policy, idp: DevIdP) -> None:
    assert role_of(policy, await verified(idp, scope="openid db.read profile")) == "reader"
    assert role_of(policy, await verified(idp, scope="db.read")) == "reader"
    # Tabs and other whitespace are not scope delimiters (RFC 6749: %x20).
    assert role_of(policy, await verified(idp, scope="openid\tdb.read")) is None
    # split = "space" expects one string: a list there is refused, not guessed at.
    listed = policy.authorize(await verified(idp, scope=["db.read"]), SELECT)
    assert (listed.allowed, listed.code) == (False, "policy.denied")
    assert "'scope' is a list, but the policy splits it" in listed.reason


async def test_roles_match_exactly(policy: Policy, idp: DevIdP) -> None:
    for groups in (["Admins"], ["ADMINS"], [" admins"], ["admins "], ["ａｄｍｉｎｓ"]):
        assert role_of(policy, await verified(idp, groups=groups)) is None, groups
    # No Unicode normalization either: NFD "Zu\u0308rich" is not the configured NFC "Zürich".
    assert role_of(policy, await verified(idp, groups=["Zu\u0308rich"])) is None
    assert role_of(policy, await verified(idp, groups=["Z\u00fcrich"])) == "reader"


async def test_deny_rules_cast_the_wider_net(policy: Policy, idp: DevIdP) -> None:
    fullwidth = "ｃｏｎｔｒａｃｔｏｒｓ"  # NFKC: "contractors"
    for variant in ("contractors", "Contractors", "CONTRACTORS", " contractors ", fullwidth):
        ident = await verified(idp, groups=["admins", variant])
        decision = policy.authorize(ident, SELECT)
        assert (decision.allowed, decision.code) == (False, "policy.denied"), variant
        assert "deny rule #1" in decision.reason
    assert role_of(policy, await verified(idp, groups=["admins", "contract"])) == "admin"
    nested = await verified(idp, groups=["admins"], org={"status": "Suspended"})
    assert "deny rule #1 (org.status=Suspended)" in policy.authorize(nested, SELECT).reason
    absent = await verified(idp, groups=["admins"], org={"status": None, "name": "x"})
    assert role_of(policy, absent) == "admin"


async def test_strings_and_integers_are_different_values(policy: Policy, idp: DevIdP) -> None:
    assert role_of(policy, await verified(idp, tenant=42)) == "admin"
    assert role_of(policy, await verified(idp, tenant=[42])) == "admin"
    assert role_of(policy, await verified(idp, tenant="42")) is None
    assert policy.authorize(await verified(idp, tier=7), SELECT).code == "policy.denied"
    assert role_of(policy, await verified(idp, tier="7", groups=["admins"])) == "admin"


@pytest.mark.parametrize(
    ("claims", "shape"),
    [
        ({"groups": [{"name": "admins"}]}, "a list holding an object"),
        ({"groups": ["admins", ["contractors"]]}, "a list holding a list"),
        ({"groups": ["admins", 1.5]}, "a list holding a number with a fraction"),
        ({"groups": ["admins", True]}, "a list holding a boolean"),
        ({"groups": {"admins": True}}, "an object"),
        ({"groups": ["admins"], "tenant": True}, "a boolean"),
        ({"groups": ["admins"], "tier": 7.0}, "a number with a fraction or exponent"),
        ({"groups": ["admins"], "scope": {"db.read": 1}}, "is an object, but the policy splits"),
        ({"groups": ["admins"], "org": ["suspended"]}, "'org' is a list, but the policy reads"),
        ({"groups": ["admins"], "org": "suspended"}, "'org' is a string, but the policy reads"),
    ],
)
async def test_claims_of_an_unusable_shape_are_refused(
    policy: Policy, idp: DevIdP, claims: dict[str, Any], shape: str
) -> None:
    # A deny rule that cannot read its claim must not be skipped: nothing runs.
    ident = await verified(idp, **claims)
    decision = policy.authorize(ident, SELECT)
    assert (decision.allowed, decision.code) == (False, "policy.denied")
    assert shape in decision.reason
    assert "cannot be evaluated" in decision.reason
    explained = policy.explain(ident)
    assert "UNUSABLE" in explained
    assert "result: every query is refused (policy.denied)" in explained


def test_claims_only_rules_of_other_issuers_read_are_not_checked() -> None:
    scoped = Policy.from_dict(
        tomllib.loads(
            """
[roles.ops]
match = { "x_roles" = ["ops"] }
issuers = ["https://a.example"]
login = "r"
[roles.all]
match = { groups = ["g"] }
login = "r"
"""
        ),
        source="p.toml",
    )
    claims = {"iss": "https://b.example", "sub": "s", "groups": ["g"], "x_roles": {"ops": 1}}
    ident = Identity(
        subject="s",
        issuer="https://b.example",
        audience=("edgetds",),
        claims=MappingProxyType(claims),
        token_sha256="0" * 64,
        expires_at=0,
        algorithm="EdDSA",
        key_id=None,
    )
    decision = scoped.authorize(ident, SELECT)
    assert decision.role is not None
    assert decision.role.name == "all"  # matched (the refusal is the role's own: no ad-hoc SQL)
    assert "cannot be evaluated" not in decision.reason


@pytest.mark.parametrize(
    ("match", "problem"),
    [
        ('{ groups = { values = ["a"], split = "space" } }', "'groups' is a list of names"),
        ('{ "realm_access.roles" = { values = ["a"], split = "space" } }', "remove split"),
        ('{ scope = { values = ["a"], split = "comma" } }', 'the only mode is "space"'),
        ('{ scope = { values = ["a"], split = true } }', "not supported"),
        ('{ scope = { values = ["db read"], split = "space" } }', "contains a space"),
        ('{ scope = { value = ["a"] } }', "unknown key(s) ['value']"),
        ('{ scope = { split = "space" } }', "a non-empty list of strings"),
        ('{ groups = [" admins"] }', "leading/trailing whitespace"),
        ('{ groups = ["admins "] }', "leading/trailing whitespace"),
        ('{ groups = [""] }', "is empty"),
        ("{ groups = [1.5] }", "a non-empty list of strings"),
        ("{ groups = [true] }", "a non-empty list of strings"),
    ],
)
def test_policy_misuse_is_explained(match: str, problem: str) -> None:
    role = '[roles.r]\nlogin = "r"\n'
    deny = '[roles.ok]\nmatch = { g = ["g"] }\nlogin = "r"\n[[deny]]\n'
    for table in (role, deny):
        doc = tomllib.loads(f"{table}match = {match}\n")
        with pytest.raises(PolicyError) as info:
            Policy.from_dict(doc, source="policy.toml")
        assert problem in str(info.value), str(info.value)
