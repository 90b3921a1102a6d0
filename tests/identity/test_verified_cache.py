"""The verified-token cache of identity/oidc.py: the same token again skips the signature check,
but exp is enforced at every use, a key that left the JWKS is not trusted through the cache, and
the cache is bounded (0 = off)."""

from __future__ import annotations

import time

import pytest
import trio

from edgetds.devidp import DevIdP
from identity.oidc import IssuerConfig, TokenError, TokenVerifier


def _cfg(idp: DevIdP) -> IssuerConfig:
    return IssuerConfig(issuer=idp.issuer, audiences=("edgetds",))


async def test_same_token_is_remembered(idp: DevIdP) -> None:
    with trio.fail_after(10):
        async with TokenVerifier([_cfg(idp)]) as verifier:
            token = idp.mint(sub="alice")
            first = await verifier.verify(token)
            assert await verifier.verify(token) is first
            other = await verifier.verify(idp.mint(sub="alice"))
    assert other is not first
    assert other.subject == "alice"


async def test_exp_is_checked_at_every_use(idp: DevIdP) -> None:
    now = [time.time()]
    with trio.fail_after(10):
        async with TokenVerifier([_cfg(idp)], leeway_s=30, clock=lambda: now[0]) as verifier:
            token = idp.mint(sub="alice", expires_in=60)
            ident = await verifier.verify(token)
            now[0] = ident.expires_at + 29  # within the leeway: still good
            assert await verifier.verify(token) is ident
            now[0] = ident.expires_at + 30  # pyjwt's rule: exp <= now - leeway is expired
            with pytest.raises(TokenError) as info:
                await verifier.verify(token)
            assert info.value.code == "auth.expired"
            # and again (the entry is gone; pyjwt refuses it on its own clock only if truly
            # expired, so move the clock back: the token verifies from scratch, a new Identity)
            now[0] = time.time()
            again = await verifier.verify(token)
    assert again is not ident
    assert again.subject == "alice"


async def test_a_key_gone_from_the_jwks_is_not_trusted_through_the_cache(idp: DevIdP) -> None:
    with trio.fail_after(10):
        async with TokenVerifier(
            [_cfg(idp)], jwks_max_age_s=0.2, min_refresh_interval_s=0
        ) as verifier:
            old_key = idp.signing_key("RS256")
            token = idp.mint(sub="alice")
            await verifier.verify(token)
            idp.rotate("RS256")
            idp.keys.remove(old_key)  # revoked at the IdP
            await trio.sleep(0.3)  # the cached keys are now due for a refresh
            with pytest.raises(TokenError) as info:
                await verifier.verify(token)
    assert info.value.code == "auth.invalid_token"
    assert "not in the JWKS" in info.value.message


async def test_refreshed_keys_mean_a_fresh_verification(idp: DevIdP) -> None:
    with trio.fail_after(10):
        async with TokenVerifier(
            [_cfg(idp)], jwks_max_age_s=0.2, min_refresh_interval_s=0
        ) as verifier:
            token = idp.mint(sub="alice")
            first = await verifier.verify(token)
            await trio.sleep(0.3)
            second = await verifier.verify(token)
            assert second is not first  # verified again against the refetched keys
            assert await verifier.verify(token) is second


async def test_bounded_and_switchable_off(idp: DevIdP) -> None:
    with trio.fail_after(10):
        async with TokenVerifier([_cfg(idp)], verified_cache_size=2) as verifier:
            a, b, c = (idp.mint(sub=s) for s in ("a", "b", "c"))
            first_a = await verifier.verify(a)
            await verifier.verify(b)
            await verifier.verify(c)  # evicts a, the oldest
            assert await verifier.verify(a) is not first_a
        async with TokenVerifier([_cfg(idp)], verified_cache_size=0) as verifier:
            token = idp.mint(sub="alice")
            assert await verifier.verify(token) is not await verifier.verify(token)


async def test_refusals_are_not_remembered(idp: DevIdP) -> None:
    with trio.fail_after(10):
        async with TokenVerifier([_cfg(idp)]) as verifier:
            token = idp.mint(sub="alice", aud="someone-else")
            for _ in range(2):
                with pytest.raises(TokenError) as info:
                    await verifier.verify(token)
                assert info.value.code == "auth.wrong_audience"
            # a token that differs only in its signature is not taken for a remembered one
            good = idp.mint(sub="alice")
            await verifier.verify(good)
            header, payload, sig = good.split(".")
            forged = f"{header}.{payload}.{sig[:-4]}AAAA"
            with pytest.raises(TokenError) as info:
                await verifier.verify(forged)
    assert info.value.code == "auth.invalid_token"
