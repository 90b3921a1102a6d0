"""Token attacks: every forged or misused token is refused with the right code.

Real keys, real tokens, real HTTP to dev IdPs on 127.0.0.1; key fetches are counted on the IdP.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

import pytest
import trio

from edgetds.devidp import DevIdP, DevKey, generate_key, sign_token
from identity.oidc import IssuerConfig, TokenError, TokenVerifier
from tests.identity._jwt_forge import b64url, forge

JWKS = "/jwks.json"


async def refused(verifier: TokenVerifier, token: str, code: str) -> TokenError:
    with trio.fail_after(10):
        with pytest.raises(TokenError) as info:
            await verifier.verify(token)
    assert info.value.code == code, info.value.message
    # The token (or any long piece of it) never appears in what we say about it.
    for piece in token.split("."):
        if len(piece) > 8:
            assert piece not in str(info.value)
    return info.value


async def test_alg_none_refused(idp: DevIdP, verifier: TokenVerifier) -> None:
    claims = idp.claims(sub="mallory", groups=["admins"])
    await refused(verifier, forge({"alg": "none", "typ": "JWT"}, claims), "auth.invalid_token")
    # Same with a junk signature segment, and with the kid of a real key.
    kid = idp.signing_key().kid
    err = await refused(
        verifier, forge({"alg": "none", "kid": kid}, claims, b"x"), "auth.invalid_token"
    )
    assert "not allowed" in err.message
    await refused(verifier, forge({"alg": "None", "kid": kid}, claims, b"x"), "auth.invalid_token")


async def test_hs256_with_public_key_as_secret_refused(
    idp: DevIdP, verifier: TokenVerifier
) -> None:
    key = idp.signing_key("RS256")
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    claims = idp.claims(sub="mallory", groups=["admins"])
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    # The classic key-confusion forgery: HMAC keyed with the published public key's PEM bytes.
    for secret in (key.public_pem(), json.dumps(key.public_jwk()).encode()):
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        await refused(verifier, f"{signing_input}.{b64url(mac)}", "auth.invalid_token")


def test_hs_and_none_cannot_be_configured() -> None:
    for alg in ("HS256", "none", "HS512"):
        with pytest.raises(ValueError, match="never accepted"):
            IssuerConfig(issuer="https://idp.example", audiences=("a",), algorithms=(alg,))


async def test_key_type_must_match_alg(idp: DevIdP, verifier: TokenVerifier) -> None:
    # Header says RS256 but names the EC key's kid (and vice versa): refused before pyjwt.
    ec_key, rsa_key = idp.signing_key("ES256"), idp.signing_key("RS256")
    claims = idp.claims(sub="mallory")
    token = sign_token(claims, rsa_key, headers={"kid": ec_key.kid})
    err = await refused(verifier, token, "auth.invalid_token")
    assert "cannot verify RS256" in err.message
    token = sign_token(claims, ec_key, headers={"kid": rsa_key.kid})
    await refused(verifier, token, "auth.invalid_token")


async def test_unknown_kid_flood_causes_at_most_one_refresh(idp: DevIdP) -> None:
    cfg = IssuerConfig(issuer=idp.issuer, audiences=("edgetds",))
    attacker = generate_key("RS256")
    async with TokenVerifier([cfg], min_refresh_interval_s=0.5) as verifier:
        await verifier.verify(idp.mint(sub="alice"))
        assert idp.requests[JWKS] == 1
        await trio.sleep(0.6)  # the interval has passed: the first unknown kid may refresh once
        for i in range(50):
            forged = DevKey(kid=f"random-{i}", alg="RS256", private_key=attacker.private_key)
            await refused(verifier, idp.mint(sub="mallory", key=forged), "auth.invalid_token")
        # Fifty random kids: one refresh, not fifty fetches.
        assert idp.requests[JWKS] == 2
        assert verifier.fetch_count(idp.issuer) == 2
        # Known kids keep working meanwhile, without fetching.
        await verifier.verify(idp.mint(sub="alice"))
        assert idp.requests[JWKS] == 2


async def test_unknown_kid_refused_without_refresh_inside_interval(
    idp: DevIdP, verifier: TokenVerifier
) -> None:
    await verifier.verify(idp.mint(sub="alice"))
    attacker = generate_key("ES256")
    for i in range(20):
        forged = DevKey(kid=f"k{i}", alg="ES256", private_key=attacker.private_key)
        err = await refused(verifier, idp.mint(sub="m", key=forged), "auth.invalid_token")
        assert "not in the JWKS" in err.message
    assert idp.requests[JWKS] == 1


async def test_jku_x5u_jwk_headers_ignored(
    idp: DevIdP, other_idp: DevIdP, verifier: TokenVerifier
) -> None:
    attacker = generate_key("RS256")
    hostile = {
        "jku": other_idp.issuer + JWKS,
        "x5u": other_idp.issuer + "/cert.pem",
        "jwk": attacker.public_jwk(),
    }
    claims = idp.claims(sub="mallory", groups=["admins"])
    # Attacker key, carrying its own public key; kid of the legitimate key or the attacker's.
    for kid in (idp.signing_key().kid, attacker.kid):
        token = sign_token(claims, attacker, headers={**hostile, "kid": kid})
        await refused(verifier, token, "auth.invalid_token")
    assert sum(other_idp.requests.values()) == 0  # nothing was fetched from the jku/x5u host
    # The same headers on a genuinely signed token change nothing: it verifies with our keys.
    ok = idp.mint(sub="alice", headers=hostile)
    assert (await verifier.verify(ok)).subject == "alice"
    assert sum(other_idp.requests.values()) == 0


async def test_expired_refused_with_leeway(idp: DevIdP, verifier: TokenVerifier) -> None:
    await refused(verifier, idp.mint(sub="alice", expires_in=-120), "auth.expired")
    # Inside the 30 s default leeway: accepted.
    assert (await verifier.verify(idp.mint(sub="alice", expires_in=-10))).subject == "alice"


async def test_nbf_in_future_refused(idp: DevIdP, verifier: TokenVerifier) -> None:
    now = int(time.time())
    late = idp.mint(sub="a", expires_in=900, extra_claims={"nbf": now + 600})
    err = await refused(verifier, late, "auth.invalid_token")
    assert "not valid yet" in err.message
    ident = await verifier.verify(idp.mint(sub="a", extra_claims={"nbf": now + 10}))
    assert ident.subject == "a"


async def test_token_lifetime_capped_per_issuer(idp: DevIdP) -> None:
    # Real tokens from the dev IdP over real HTTP: a ten-year token is refused by default (24 h),
    # and an issuer may set a shorter cap of its own.
    table = {"audience": "edgetds", "issuers": [{"issuer": idp.issuer}]}
    with trio.fail_after(10):
        async with TokenVerifier.from_config(table) as verifier:
            decade = idp.mint(sub="a", expires_in=10 * 365 * 86_400)
            err = await refused(verifier, decade, "auth.invalid_token")
            assert "max_token_lifetime_s" in err.message
            assert (await verifier.verify(idp.mint(sub="a", expires_in=7200))).subject == "a"
        table["issuers"] = [{"issuer": idp.issuer, "max_token_lifetime_s": 3600}]
        async with TokenVerifier.from_config(table) as verifier:
            await refused(verifier, idp.mint(sub="a", expires_in=7200), "auth.invalid_token")
            assert (await verifier.verify(idp.mint(sub="a", expires_in=3600))).subject == "a"


async def test_wrong_or_missing_audience_refused(idp: DevIdP, verifier: TokenVerifier) -> None:
    await refused(verifier, idp.mint(sub="a", aud="someone-else"), "auth.wrong_audience")
    await refused(verifier, idp.mint(sub="a", aud=["x", "y"]), "auth.wrong_audience")
    claims = idp.claims(sub="a")
    del claims["aud"]
    await refused(verifier, sign_token(claims, idp.signing_key()), "auth.wrong_audience")
    # A list containing our audience is fine.
    assert (await verifier.verify(idp.mint(sub="a", aud=["x", "edgetds"]))).audience == (
        "x",
        "edgetds",
    )


async def test_wrong_iss_refused_without_fetch(idp: DevIdP, verifier: TokenVerifier) -> None:
    for iss in (idp.issuer + "/", idp.issuer.replace("127.0.0.1", "localhost"), "https://evil"):
        token = idp.mint(sub="a", extra_claims={"iss": iss})
        await refused(verifier, token, "auth.unknown_issuer")
    for iss in (None, "", 7, ["x"], {"a": 1}):  # not a string: refused unsigned, nothing fetched
        forged = forge({"alg": "RS256"}, {**idp.claims(sub="a"), "iss": iss}, b"sig")
        await refused(verifier, forged, "auth.invalid_token")
    assert sum(idp.requests.values()) == 0


async def test_unknown_issuer_refused_before_any_fetch(
    idp: DevIdP, other_idp: DevIdP, verifier: TokenVerifier
) -> None:
    for _ in range(20):
        await refused(verifier, other_idp.mint(sub="a"), "auth.unknown_issuer")
    assert sum(other_idp.requests.values()) == 0
    assert sum(idp.requests.values()) == 0


async def test_tampered_payload_refused(idp: DevIdP, verifier: TokenVerifier) -> None:
    token = idp.mint(sub="alice", groups=["analysts"])
    head, _, sig = token.split(".")
    evil = b64url(json.dumps(idp.claims(sub="alice", groups=["admins"])).encode())
    err = await refused(verifier, f"{head}.{evil}.{sig}", "auth.invalid_token")
    assert "signature" in err.message
    # One flipped signature character too.
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    await refused(verifier, f"{head}.{token.split('.')[1]}.{flipped}", "auth.invalid_token")


async def test_truncated_and_garbage_refused(idp: DevIdP, verifier: TokenVerifier) -> None:
    token = idp.mint(sub="alice")
    for bad in (
        token[:-10],
        token.rsplit(".", 1)[0],
        token.rsplit(".", 1)[0] + ".",
        token[: len(token) // 2],
        "a.b.c",
        "not a jwt",
        "..",
        token + ".extra",
        "e30.e30.e30",  # {} header and payload
        b64url(b"[1]") + ".e30.AA",
    ):
        await refused(verifier, bad, "auth.invalid_token")


async def test_huge_token_refused_before_parsing(idp: DevIdP, verifier: TokenVerifier) -> None:
    big = idp.mint(sub="alice", extra_claims={"pad": "x" * (1024 * 1024)})
    err = await refused(verifier, big, "auth.invalid_token")
    assert "over the 16384-byte limit" in err.message
    # Garbage of that size is refused for its size, not for its shape: nothing was parsed.
    err = await refused(verifier, "@" * (1024 * 1024), "auth.invalid_token")
    assert "over the 16384-byte limit" in err.message
    assert sum(idp.requests.values()) == 0


async def test_issuer_a_token_signed_with_issuer_b_keys(idp: DevIdP, other_idp: DevIdP) -> None:
    configs = [
        IssuerConfig(issuer=idp.issuer, audiences=("edgetds",)),
        IssuerConfig(issuer=other_idp.issuer, audiences=("edgetds",)),
    ]
    async with TokenVerifier(configs) as verifier:
        assert (await verifier.verify(idp.mint(sub="a"))).issuer == idp.issuer
        assert (await verifier.verify(other_idp.mint(sub="b"))).issuer == other_idp.issuer
        claims_a = idp.claims(sub="mallory", groups=["admins"])
        b_key = other_idp.signing_key()
        # B's key under B's kid, and B's key passed off under A's kid.
        await refused(verifier, sign_token(claims_a, b_key), "auth.invalid_token")
        forged = DevKey(kid=idp.signing_key().kid, alg="RS256", private_key=b_key.private_key)
        await refused(verifier, sign_token(claims_a, forged), "auth.invalid_token")


async def test_missing_token_and_claims(idp: DevIdP, verifier: TokenVerifier) -> None:
    for empty in (None, "", "   "):
        with pytest.raises(TokenError) as info:
            await verifier.verify(empty)
        assert info.value.code == "auth.missing_token"
    for claim in ("exp", "sub"):
        claims = idp.claims(sub="a")
        del claims[claim]
        await refused(verifier, sign_token(claims, idp.signing_key()), "auth.invalid_token")


async def test_no_token_in_logs(
    idp: DevIdP, verifier: TokenVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = [
        idp.mint(sub="alice"),
        idp.mint(sub="alice", expires_in=-300),
        idp.mint(sub="alice", aud="other"),
        sign_token(idp.claims(sub="m"), generate_key("ES256")),
    ]
    with trio.fail_after(10):
        for token in tokens:
            try:
                await verifier.verify(token)
            except TokenError as exc:
                logging.getLogger("test").info("refused: %s", exc)
    assert "jwks loaded" in caplog.text  # logging did happen
    for token in tokens:
        for piece in token.split("."):
            assert piece not in caplog.text
