"""`edgetds connector enroll` (connector/enroll.py, SPEC.md 8.7): it writes nothing unless the
relay that made the token signed the answer, refuses before sending anything what it can check
locally, reads the token from a file or stdin, and says what to do about every refusal.

The real relay (in process, real sockets) serves the happy and the refused cases; the forged
answers come from a rogue relay: a test peer that speaks the enrolment exchange with a key the
token does not pin (or alters a genuine answer on its way), as a man in the middle would.
"""

from __future__ import annotations

import functools
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from asgiapp import answer_lifespan
from connector.enroll import EXAMPLE
from edgetds.cli import main
from protocol import (
    canonical_json,
    check_enroll_request,
    make_enroll_token,
    public_key_text,
    sign_enrolled,
)
from relay.http import read_body
from relay.server import open_relay
from tests.support.connector_keys import closed_port
from tests.support.relays import relay_config

EDGETDS = [sys.executable, "-m", "edgetds"]
Forge = Callable[[bytes, Ed25519PrivateKey], dict[str, Any]]


@asynccontextmanager
async def rogue_relay(pinned: Ed25519PrivateKey, forge: Forge) -> AsyncIterator[str]:
    """An HTTP server answering every enrolment 200 with ``forge(body, pinned)``; its URL."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        body = await read_body(scope, receive, limit=65536)
        answer = canonical_json(forge(body, pinned))
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(functools.partial(serve, app, config))  # type: ignore[arg-type]
        yield str(binds[0])
        nursery.cancel_scope.cancel()


def request_of(body: bytes, pinned: Ed25519PrivateKey) -> Any:
    return check_enroll_request(
        body, tunnel="sales", tunnels={"sales"}, relay_keys=[pinned.public_key()], now=time.time()
    )


def signed_by_another_key(body: bytes, pinned: Ed25519PrivateKey) -> dict[str, Any]:
    return sign_enrolled(Ed25519PrivateKey.generate(), request_of(body, pinned))


def naming_the_pinned_key_id(body: bytes, pinned: Ed25519PrivateKey) -> dict[str, Any]:
    genuine = sign_enrolled(pinned, request_of(body, pinned))
    forged = sign_enrolled(Ed25519PrivateKey.generate(), request_of(body, pinned))
    return {**forged, "relay_key_id": genuine["relay_key_id"]}


def altered_on_the_way(body: bytes, pinned: Ed25519PrivateKey) -> dict[str, Any]:
    genuine = sign_enrolled(pinned, request_of(body, pinned))
    other = public_key_text(Ed25519PrivateKey.generate())
    return {**genuine, "enrolled": {**genuine["enrolled"], "public_key": other}}


def token_for(url: str, key: Ed25519PrivateKey, *, now: int | None = None) -> str:
    return make_enroll_token(
        key,
        relay_url=url,
        tunnel="sales",
        connector_id="conn-9",
        now=int(time.time()) if now is None else now,
    )


async def run_cli(*args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    done = await trio.run_process(
        [*EDGETDS, *args], stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.mark.parametrize(
    "forge", [signed_by_another_key, naming_the_pinned_key_id, altered_on_the_way]
)
async def test_an_answer_the_pinned_relay_key_did_not_sign_writes_nothing(
    tmp_path: Path, forge: Forge
) -> None:
    pinned = Ed25519PrivateKey.generate()
    out = tmp_path / "out"
    with trio.fail_after(60):
        async with rogue_relay(pinned, forge) as url:
            (tmp_path / "token").write_text(token_for(url, pinned))
            status, stdout, stderr = await run_cli(
                "connector", "enroll", "--token-file", str(tmp_path / "token"), "--out", str(out)
            )
    assert status == 1, stdout + stderr
    assert "auth.relay_rejected" in stderr
    assert "nothing was written" in stderr
    assert list(out.iterdir()) == []


async def test_what_can_be_checked_locally_is_refused_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    # nothing listens at the token's URL: a refusal that names no transport error was local
    url = f"http://127.0.0.1:{closed_port()}"
    key = Ed25519PrivateKey.generate()
    out = tmp_path / "out"
    with trio.fail_after(60):
        expired = token_for(url, key, now=int(time.time()) - 3600)
        status, _, stderr = await run_cli(
            "connector", "enroll", "-", "--out", str(out), stdin=expired.encode()
        )
        assert (status, "enroll.expired" in stderr) == (1, True), stderr
        assert "ask the relay operator for a new token" in stderr
        assert expired not in stderr
        cut = token_for(url, key)[:-20]
        status, _, stderr = await run_cli("connector", "enroll", cut, "--out", str(out))
        assert (status, "enroll.invalid_token" in stderr) == (1, True), stderr
        out.mkdir(exist_ok=True)
        (out / "connector.key").write_text("an existing key")
        status, _, stderr = await run_cli(
            "connector", "enroll", token_for(url, key), "--out", str(out)
        )
        assert status == 1
        assert "exists" in stderr
        assert "--force" in stderr
        plain = token_for("http://relay.example.com", key)
        status, _, stderr = await run_cli("connector", "enroll", plain, "--out", str(out))
        assert status == 1
        assert "enroll.invalid_token" in stderr
        assert "only loopback may use http://" in stderr
    assert (out / "connector.key").read_text() == "an existing key"


async def test_a_new_directory_gets_the_example_layout_and_a_used_token_is_refused(
    tmp_path: Path,
) -> None:
    state = tmp_path / "enrolled.json"
    config, _ = relay_config(tunnel="sales", connector_ids=[], issuer="http://127.0.0.1:1",
                             enrollment_file=str(state))  # fmt: skip
    with trio.fail_after(60):
        async with open_relay(config) as running:
            text = token_for(running.http_url, config.private_key)
            first, second = tmp_path / "first", tmp_path / "second"
            status, stdout, stderr = await run_cli(
                "connector", "enroll", "-", "--out", str(first), stdin=text.encode()
            )
            assert status == 0, stderr
            assert text not in stdout + stderr
            status, _, stderr = await run_cli(
                "connector", "enroll", "-", "--out", str(second), stdin=text.encode()
            )
            assert status == 1
            assert "enroll.used" in stderr
            assert "tell the relay operator" in stderr
            assert not second.exists() or list(second.iterdir()) == []
            async with httpx.AsyncClient() as client:
                stats = (await client.get(f"{running.http_url}/v1/relay/stats")).json()
            assert stats["enrolled_keys"] == 1
    written = (first / "connector.toml").read_text()
    doc = tomllib.loads(written)
    assert doc["connector"]["id"] == "conn-9"
    assert doc["connector"]["relay_urls"] == [running.ws_url]
    assert doc["connector"]["private_key_file"] == "connector.key"
    assert doc["connector"]["relay_public_keys"] == [public_key_text(config.private_key)]
    # the example's other tables and comments are kept
    example = tomllib.loads(EXAMPLE.read_text())
    assert doc["database"] == example["database"]
    assert doc["audit"] == example["audit"]
    assert "# Whose end-user tokens are accepted." in written
    assert (first / "connector.pub").read_text().startswith("ed25519:")
    assert (first / "connector.key").stat().st_mode & 0o777 == 0o600


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["connector", "enroll", "--help"], ["relay", "enroll", "--help"]):
        with pytest.raises(SystemExit):
            main(command)
        text = capsys.readouterr().out
        assert "examples:" in text
        assert "edgetds connector enroll --token-file" in text
    with pytest.raises(SystemExit):
        main(["connector", "enroll", "--help"])
    assert "`ps`" in capsys.readouterr().out


def test_without_the_example_a_new_config_holds_the_connector_table(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An install without examples/ (the single binary) still writes the enrolled keys."""
    from connector import enroll
    from protocol import parse_enroll_token

    monkeypatch.setattr(enroll, "EXAMPLE", tmp_path / "missing.toml")
    claims = parse_enroll_token(
        token_for("https://relay.example.com", Ed25519PrivateKey.generate())
    )
    doc = tomllib.loads(enroll.connector_toml(None, claims))
    assert doc == {
        "connector": {
            "id": "conn-9",
            "tunnel": "sales",
            "relay_urls": ["wss://relay.example.com"],
            "private_key_file": "connector.key",
            "relay_public_keys": [claims.relay_key],
        }
    }
