"""Conformance: one-token enrolment (SPEC.md 8.7, 11.8) on both relays.

The happy path runs both CLIs as processes (`edgetds relay enroll --key ... --relay-url ...`, the
way an operator enrols against either relay, then `edgetds connector enroll`), starts a connector
from the written config and queries tdslite through the relay. The attacks post real bodies with
real keys straight to ``/v1/tunnels/demo/enroll``. The Python relay keeps enrolled keys in an
``enrollment_file`` under the test's tmp_path.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connector.config import load_config
from connector.runtime import open_connector
from protocol import (
    canonical_json,
    key_id,
    make_enroll_request,
    public_key_text,
    verify_enrolled,
)
from tests.conformance.test_auth import connector_token, upgrade_status
from tests.support.conformance import RELAYS, Conformance, open_conformance
from tests.support.connector_stack import write_config_to_enrol
from tests.support.e2e_stack import write_key
from tests.support.relays import enroll_token

EDGETDS = [sys.executable, "-m", "edgetds"]


@pytest.fixture(params=list(RELAYS))
async def conf(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Conformance]:
    """The conformance stack with enrolment on (the Python relay: an enrollment_file)."""
    options: dict[str, Any] = {}
    if request.param == "python":
        options["enrollment_file"] = str(tmp_path / "enrolled.json")
    with trio.CancelScope(deadline=trio.current_time() + 60) as scope:  # setup deadline
        async with open_conformance(request.param, tmp_path, **options) as conformance:
            scope.deadline = trio.current_time() + 300
            yield conformance
    if scope.cancelled_caught:
        raise trio.TooSlowError(f"the {request.param} conformance stack did not start or stop")


def token(
    conf: Conformance,
    *,
    tunnel: str = "demo",
    connector_id: str = "conn-new",
    now: int | None = None,
    key: Ed25519PrivateKey | None = None,
) -> str:
    return enroll_token(conf.relay, tunnel=tunnel, connector_id=connector_id, now=now, key=key)


def altered(text: str, **changes: Any) -> str:
    """``text`` with claims changed and the signature kept."""
    prefix, body, sig = text.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    new = base64.urlsafe_b64encode(canonical_json({**claims, **changes})).rstrip(b"=").decode()
    return f"{prefix}.{new}.{sig}"


async def post(conf: Conformance, body: Any, *, tunnel: str = "demo") -> httpx.Response:
    url = f"{conf.relay.http_url}/v1/tunnels/{tunnel}/enroll"
    return await conf.http.post(url, content=canonical_json(body))


def code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def enrol(conf: Conformance, text: str) -> Ed25519PrivateKey:
    """Enrol a fresh key with ``text`` (must succeed); the key."""
    key = Ed25519PrivateKey.generate()
    body = make_enroll_request(text, key)
    response = await post(conf, body)
    assert response.status_code == 200, response.text
    verify_enrolled(response.json(), token=text, public_key=body["public_key"])
    return key


async def test_enrol_with_both_clis_then_the_connector_serves_queries(
    conf: Conformance, tmp_path: Path
) -> None:
    relay_key = conf.relay.relay_key
    assert relay_key is not None
    key_file = write_key(tmp_path / "relay.key", relay_key)
    out = tmp_path / "enrolled"
    write_config_to_enrol(out, issuer=conf.idp.issuer, db=conf.db)
    with trio.fail_after(60):
        made = await trio.run_process(
            [*EDGETDS, "relay", "enroll", "--tunnel", "demo", "--connector", "conn-new",
             "--key", str(key_file), "--relay-url", conf.relay.http_url, "--expires-in", "5m"],
            capture_stdout=True, capture_stderr=True,
        )  # fmt: skip
        text = made.stdout.decode().strip()
        assert text.startswith("edgetds-enroll-1."), made.stderr
        assert text not in made.stderr.decode()
        (tmp_path / "conn-new.token").write_text(text + "\n")
        done = await trio.run_process(
            [*EDGETDS, "connector", "enroll", "--token-file", str(tmp_path / "conn-new.token"),
             "--out", str(out)],
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()
        assert text not in done.stdout.decode() + done.stderr.decode()
        assert "edgetds connector run --config" in done.stdout.decode()
        config = load_config(out / "connector.toml")
        link = config.tunnel
        assert (link.connector_id, link.tunnel, link.relay_urls) == (
            "conn-new",
            "demo",
            (conf.relay.ws_url,),
        )
        assert link.relay_public_keys == (conf.relay.relay_public_key,)
        assert (out / "connector.key").stat().st_mode & 0o777 == 0o600
        async with open_connector(config) as enrolled:
            await enrolled.wait_ready()
            await conf.connector.shutdown()  # conn-1 leaves: only the enrolled one serves
            response = await conf.query("SELECT COUNT(*) AS c FROM notes")
            assert (response.status, response.rows) == (200, [[2]]), response.raw
            assert sum(enrolled.service.counts.values()) >= 1


async def test_a_replayed_token_is_refused_and_the_first_enrolment_still_works(
    conf: Conformance,
) -> None:
    text = token(conf)
    first = await enrol(conf, text)
    again = await post(conf, make_enroll_request(text, Ed25519PrivateKey.generate()))
    assert code(again) == (409, "enroll.used")
    refused = connector_token(conf, "conn-new", key=Ed25519PrivateKey.generate())
    assert await upgrade_status(conf, refused) == 401
    conf.relay.connector_keys["conn-new"] = first
    with trio.fail_after(60):
        async with conf.open_connector("conn-new") as connector:
            assert connector.ready_links >= 1


async def test_an_expired_token_is_refused(conf: Conformance) -> None:
    old = token(conf, now=int(time.time()) - 3600)
    response = await post(conf, make_enroll_request(old, Ed25519PrivateKey.generate()))
    assert code(response) == (401, "enroll.expired")


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"connector_id": "conn-1"}, id="connector_id"),
        pytest.param({"tunnel": "demo"}, id="tunnel"),  # made for "elsewhere"
        pytest.param({"exp": int(time.time()) + 6 * 86400}, id="exp"),
    ],
)
async def test_altered_claims_are_refused(conf: Conformance, changes: dict[str, Any]) -> None:
    original = token(conf, tunnel="elsewhere" if "tunnel" in changes else "demo")
    forged = altered(original, **changes)
    key = Ed25519PrivateKey.generate()
    # the proof is made for the forged claims, as an attacker would make it
    body = {**make_enroll_request(original, key), "token": forged}
    body["proof"] = proof_for(forged, key)
    response = await post(conf, body)
    assert code(response) == (401, "enroll.invalid_token")


def proof_for(text: str, key: Ed25519PrivateKey) -> str:
    body = text.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    signed = {
        "jti": claims["jti"],
        "tunnel": claims["tunnel"],
        "connector_id": claims["connector_id"],
        "public_key": public_key_text(key),
    }
    sig = key.sign(b"edgetds/1 enroll-proof\n" + canonical_json(signed))
    return base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


async def test_a_token_signed_by_another_key_is_refused(conf: Conformance) -> None:
    stranger = token(conf, key=Ed25519PrivateKey.generate())
    response = await post(conf, make_enroll_request(stranger, Ed25519PrivateKey.generate()))
    assert code(response) == (401, "enroll.invalid_token")


async def test_a_token_for_another_tunnel_is_refused_at_this_tunnels_url(
    conf: Conformance,
) -> None:
    other = token(conf, tunnel="elsewhere")
    response = await post(conf, make_enroll_request(other, Ed25519PrivateKey.generate()))
    assert code(response) == (401, "enroll.invalid_token")


async def test_a_bad_proof_is_refused_and_leaves_the_token_unused(conf: Conformance) -> None:
    text = token(conf)
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    body = {**make_enroll_request(text, key), "proof": proof_for(text, other)}
    response = await post(conf, body)
    assert code(response) == (400, "enroll.invalid_proof")
    await enrol(conf, text)  # the refusal consumed nothing


async def test_enrolling_again_replaces_the_key_and_drains_its_connections(
    conf: Conformance,
) -> None:
    first = await enrol(conf, token(conf))
    conf.relay.connector_keys["conn-new"] = first
    status_url = f"{conf.relay.http_url}/v1/tunnels/demo/status"
    headers = {"Authorization": f"Bearer {conf.token()}"}

    async def draining() -> int:
        response = await conf.http.get(status_url, headers=headers)
        return int(response.json()["draining"])

    with trio.fail_after(60):
        async with conf.open_connector("conn-new") as old:
            assert await draining() == 0
            second = await enrol(conf, token(conf))
            # The relay's DRAIN makes the old key's connections redial at once. (The connector
            # closes a drained connection with nothing in flight right away, so /status shows
            # it draining only for a moment: polling it races the close.)
            while old.immediate_reconnects < 1:
                await old.wait_changed()
            # the old key is no longer accepted, the new one is
            assert await upgrade_status(conf, connector_token(conf, "conn-new", key=first)) == 401
            conf.relay.connector_keys["conn-new"] = second
            async with conf.open_connector("conn-new") as renewed:
                assert renewed.ready_links >= 1
    assert key_id(first) != key_id(second)
