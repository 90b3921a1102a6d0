"""`edgetds dev-idp token`: mints tokens a verifier of the served issuer accepts."""

from __future__ import annotations

import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from edgetds.cli import main
from edgetds.devidp import DevIdP, open_dev_idp
from identity.oidc import IssuerConfig, TokenVerifier
from tests.support.processes import first_line


async def test_cli_token_verifies_against_served_idp(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_dir = tmp_path / "idp"
    with trio.fail_after(10):
        async with open_dev_idp(key_dir=key_dir) as idp:
            argv = ["dev-idp", "token", "--sub", "alice", "--groups", "analysts,ops"]
            argv += ["--key-dir", str(key_dir), "--expires-in", "60", "--claim", 'roles=["r"]']
            assert main(argv) == 0
            token = capsys.readouterr().out.strip()
            cfg = IssuerConfig(issuer=idp.issuer, audiences=("edgetds",))
            async with TokenVerifier([cfg]) as verifier:
                ident = await verifier.verify(token)
    assert ident.subject == "alice"
    assert ident.claim("groups") == ["analysts", "ops"]
    assert ident.claim("roles") == ["r"]
    assert ident.expires_at - ident.claims["iat"] == 60


def test_cli_token_without_issuer_explains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    DevIdP([], key_dir=tmp_path).save()  # keys, but no issuer file: serve never ran
    assert main(["dev-idp", "token", "--sub", "a", "--key-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "dev-idp serve" in err
    assert "--issuer" in err


def test_cli_token_never_creates_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run where no dev IdP ever ran, without --key-dir: an error, and no key pair left behind
    (a token from fresh keys would be refused by every relay)."""
    monkeypatch.chdir(tmp_path)
    argv = ["dev-idp", "token", "--sub", "a", "--issuer", "http://127.0.0.1:1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no dev IdP keys in .demo/idp" in err
    assert "edgetds demo --serve" in err
    assert list(tmp_path.iterdir()) == []


async def test_serve_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "edgetds", "dev-idp", "serve", "--port", "0",
           "--key-dir", str(tmp_path / "idp")]  # fmt: skip
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            proc: trio.Process = await nursery.start(
                partial(trio.run_process, cmd, stdout=subprocess.PIPE, check=False)
            )
            first = await first_line(proc)
            issuer = first.removeprefix("dev IdP issuer: ")
            assert issuer.startswith("http://127.0.0.1:"), first
            async with httpx.AsyncClient() as client:
                response = await client.get(f"{issuer}/.well-known/openid-configuration")
            assert response.json()["issuer"] == issuer
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
