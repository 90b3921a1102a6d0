"""Happy paths of token verification: algorithms, discovery, caching, rotation, config, outages."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
import trio
import trustme

from edgetds.devidp import DevIdP, open_dev_idp
from identity.oidc import IssuerConfig, TokenError, TokenVerifier, bearer_token, claim_at
from tests.support.ports import closed_port

JWKS = "/jwks.json"
DISCOVERY = "/.well-known/openid-configuration"


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_each_algorithm_verifies(idp: DevIdP, verifier: TokenVerifier, alg: str) -> None:
    with trio.fail_after(10):
        token = idp.mint(sub="alice", groups=["analysts"], alg=alg)
        ident = await verifier.verify(token)
    assert ident.subject == "alice"
    assert ident.issuer == idp.issuer
    assert ident.algorithm == alg
    assert ident.key_id == idp.signing_key(alg).kid
    assert ident.claim("groups") == ["analysts"]
    assert ident.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
    with pytest.raises(TypeError):
        ident.claims["groups"] = ["admins"]  # type: ignore[index]


async def test_discovery_then_cached(idp: DevIdP, verifier: TokenVerifier) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(20):  # concurrent first use: still one fetch
                nursery.start_soon(verifier.verify, idp.mint(sub="alice"))
        for _ in range(5):
            await verifier.verify(idp.mint(sub="bob", alg="ES256"))
    assert idp.requests[DISCOVERY] == 1
    assert idp.requests[JWKS] == 1


async def test_configured_jwks_uri_skips_discovery(idp: DevIdP) -> None:
    cfg = IssuerConfig(issuer=idp.issuer, audiences=("edgetds",), jwks_uri=idp.issuer + JWKS)
    with trio.fail_after(10):
        async with TokenVerifier([cfg]) as verifier:
            await verifier.verify(idp.mint(sub="alice"))
    assert idp.requests[DISCOVERY] == 0
    assert idp.requests[JWKS] == 1


async def test_static_jwks_file(tmp_path: Path) -> None:
    idp = DevIdP([], issuer="https://idp.invalid", key_dir=tmp_path)
    idp.save()
    verifier = TokenVerifier.from_config(
        {
            "audience": "edgetds",
            "issuers": [{"issuer": idp.issuer, "jwks_file": "jwks.json"}],
        },
        base_dir=tmp_path,
    )
    with trio.fail_after(10):
        async with verifier:
            ident = await verifier.verify(idp.mint(sub="carol", alg="EdDSA"))
    assert ident.subject == "carol"


async def test_key_rotation_picked_up(idp: DevIdP) -> None:
    cfg = IssuerConfig(issuer=idp.issuer, audiences=("edgetds",))
    with trio.fail_after(10):
        async with TokenVerifier([cfg], min_refresh_interval_s=0.3) as verifier:
            await verifier.verify(idp.mint(sub="alice"))
            new_key = idp.rotate("RS256")
            token = idp.mint(sub="alice")
            # Refreshed at once: the last fetch was long enough ago? No: 0.3 s may not have passed.
            await trio.sleep(0.35)
            ident = await verifier.verify(token)
            assert ident.key_id == new_key.kid
            # Old tokens (old kid still published) keep verifying without another fetch.
            fetches = idp.requests[JWKS]
            old = idp.mint(sub="alice", key=idp.keys[0])
            await verifier.verify(old)
            assert idp.requests[JWKS] == fetches == 2


async def test_rotation_waits_for_rate_limit(idp: DevIdP) -> None:
    cfg = IssuerConfig(issuer=idp.issuer, audiences=("edgetds",))
    with trio.fail_after(10):
        async with TokenVerifier([cfg], min_refresh_interval_s=30) as verifier:
            await verifier.verify(idp.mint(sub="alice"))
            idp.rotate("RS256")
            with pytest.raises(TokenError) as info:
                await verifier.verify(idp.mint(sub="alice"))
    # Within the interval the new kid is unknown: refused, and no second fetch happened.
    assert info.value.code == "auth.invalid_token"
    assert "not in the JWKS" in info.value.message
    assert idp.requests[JWKS] == 1


async def test_idp_down_is_internal_and_rate_limited() -> None:
    port = closed_port()
    issuer = f"http://127.0.0.1:{port}"
    idp = DevIdP([], issuer=issuer)
    cfg = IssuerConfig(issuer=issuer, audiences=("edgetds",))
    with trio.fail_after(10):
        async with TokenVerifier([cfg], http_timeout_s=2) as verifier:
            for _ in range(3):
                with pytest.raises(TokenError) as info:
                    await verifier.verify(idp.mint(sub="a"))
                assert info.value.code == "internal"
                assert issuer in info.value.message
            assert verifier.fetch_count(issuer) == 1


async def test_discovery_naming_another_issuer_is_refused(idp: DevIdP) -> None:
    # Configure the issuer as "localhost" while the IdP says 127.0.0.1: discovery must not match.
    alias = idp.issuer.replace("127.0.0.1", "localhost")
    idp_alias = DevIdP(idp.keys, issuer=alias)
    with trio.fail_after(10):
        async with TokenVerifier([IssuerConfig(issuer=alias, audiences=("edgetds",))]) as v:
            with pytest.raises(TokenError) as info:
                await v.verify(idp_alias.mint(sub="a"))
    assert info.value.code == "internal"
    assert "another issuer" in info.value.message


async def test_response_size_limit(idp: DevIdP) -> None:
    for i in range(60):  # grow the JWKS past a small limit
        idp.rotate("EdDSA") if i % 2 else idp.rotate("ES256")
    assert len(json.dumps(idp.jwks())) > 8192
    cfg = IssuerConfig(issuer=idp.issuer, audiences=("edgetds",))
    with trio.fail_after(10):
        async with TokenVerifier([cfg], max_response_bytes=8192) as verifier:
            with pytest.raises(TokenError) as info:
                await verifier.verify(idp.mint(sub="a"))
    assert "over 8192 bytes" in info.value.message


async def test_shared_http_client_not_closed(idp: DevIdP) -> None:
    cfg = IssuerConfig(issuer=idp.issuer, audiences=("edgetds",))
    with trio.fail_after(10):
        async with httpx.AsyncClient() as client:
            async with TokenVerifier([cfg], http_client=client) as verifier:
                await verifier.verify(idp.mint(sub="a"))
            assert not client.is_closed


def test_from_config_errors_name_the_key(tmp_path: Path) -> None:
    good = {"audience": "edgetds", "issuers": [{"issuer": "https://idp.example"}]}
    assert TokenVerifier.from_config(good).issuers == ("https://idp.example",)
    cases = [
        ({**good, "audiance": "x"}, "unknown key"),
        ({"audience": "edgetds"}, "at least one"),
        ({"issuers": [{"issuer": "https://idp.example"}]}, "no audience"),
        ({**good, "issuers": [{"issuer": "http://idp.example"}]}, "must be an https URL"),
        ({**good, "issuers": [{"issuer": "https://x", "algorithms": ["HS256"]}]}, "never"),
        ({**good, "issuers": [{"issuer": "https://x", "jwks_uri": "http://evil/k"}]}, "https"),
        ({**good, "leeway_s": "thirty"}, "leeway_s"),
        ({**good, "issuers": [{"issuer": "https://x", "aud": "y"}]}, "issuers]] #1"),
        *(
            ({**good, "issuers": [{"issuer": "https://x", "max_token_lifetime_s": bad}]}, "life")
            for bad in (0, -5, "3600", True)
        ),
    ]
    for table, expected in cases:
        with pytest.raises(ValueError, match=expected):
            TokenVerifier.from_config(table)


def test_bearer_and_claim_helpers() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Bearer a.b.c d.e.f") == "a.b.c d.e.f"  # refused later as malformed
    for bad in (None, "", "Basic dXNlcg==", "Bearer ", "Bearer", "Bearer\tabc"):
        with pytest.raises(TokenError) as info:
            bearer_token(bad)
        assert info.value.code == "auth.missing_token"
    claims = {"realm_access": {"roles": ["r1"]}, "https://x.io/groups": ["g"], "scp": "a b"}
    assert claim_at(claims, "realm_access.roles") == ["r1"]
    assert claim_at(claims, "https://x.io/groups") == ["g"]
    assert claim_at(claims, "realm_access.missing") is None
    assert claim_at(claims, "scp.x") is None


async def test_dev_idp_key_dir_round_trip(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_dev_idp(key_dir=tmp_path / "idp") as idp:
            issuer, kids = idp.issuer, [k.kid for k in idp.keys]
        assert (tmp_path / "idp" / "issuer").read_text().strip() == issuer
        assert (tmp_path / "idp" / "keys.json").stat().st_mode & 0o777 == 0o600
        reloaded = DevIdP.from_key_dir(tmp_path / "idp")
        assert [k.kid for k in reloaded.keys] == kids
        assert reloaded.issuer == issuer


async def test_https_issuer_with_configured_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    with trio.fail_after(10):
        async with open_dev_idp(certfile=tmp_path / "server.pem") as idp:
            assert idp.issuer.startswith("https://127.0.0.1:")
            table = {"audience": "edgetds", "issuers": [{"issuer": idp.issuer}]}
            # Without our CA the IdP's certificate is not trusted: keys cannot be loaded.
            async with TokenVerifier.from_config(table) as untrusting:
                with pytest.raises(TokenError) as info:
                    await untrusting.verify(idp.mint(sub="alice"))
            assert info.value.code == "internal"
            assert "CERTIFICATE_VERIFY_FAILED" in info.value.message
            trusting = TokenVerifier.from_config({**table, "ca_file": "ca.pem"}, base_dir=tmp_path)
            async with trusting:
                assert (await trusting.verify(idp.mint(sub="alice"))).subject == "alice"


async def test_warm_up_reports_each_issuer(idp: DevIdP) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    configs = [
        IssuerConfig(issuer=idp.issuer, audiences=("edgetds",)),
        IssuerConfig(issuer=dead, audiences=("edgetds",)),
    ]
    with trio.fail_after(10):
        async with TokenVerifier(configs, http_timeout_s=2) as verifier:
            report = await verifier.warm_up()
            assert report[idp.issuer] is None
            assert dead in str(report[dead])
            assert idp.requests[JWKS] == 1
            await verifier.verify(idp.mint(sub="a"))  # no further fetch
    assert idp.requests[JWKS] == 1


async def test_known_kid_does_not_wait_for_a_refresh(idp: DevIdP) -> None:
    cfg = IssuerConfig(issuer=idp.issuer, audiences=("edgetds",))
    with trio.fail_after(10):
        async with TokenVerifier([cfg], min_refresh_interval_s=0) as verifier:
            await verifier.verify(idp.mint(sub="a"))
            entry = verifier._issuers[idp.issuer]
            async with entry.lock:  # as if a slow refresh were in progress
                with trio.fail_after(1):
                    assert (await verifier.verify(idp.mint(sub="b"))).subject == "b"
