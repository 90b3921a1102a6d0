"""`edgetds keygen` and `edgetds connector check|explain`, run as real processes; the commented
examples/ files stay valid."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import trio

from edgetds.devidp import DevIdP
from identity.keys import encode_public_key, generate_key_files
from tests.support.connector_keys import Keys, closed_port, config_for

REPO = Path(__file__).resolve().parents[2]


async def edgetds(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    with trio.fail_after(60):
        return await trio.run_process(
            [sys.executable, "-m", "edgetds", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, **(env or {})},
        )


async def test_keygen_cli(tmp_path: Path) -> None:
    done = await edgetds("keygen", "--out", str(tmp_path), "--name", "conn-9")
    assert done.returncode == 0, done.stderr
    pub = (tmp_path / "conn-9.pub").read_text().strip()
    assert pub.encode() in done.stdout
    assert (tmp_path / "conn-9.key").stat().st_mode & 0o077 == 0
    again = await edgetds("keygen", "--out", str(tmp_path), "--name", "conn-9")
    assert again.returncode == 1
    assert b"already exists" in again.stderr


async def test_example_config_checks_ok(tmp_path: Path) -> None:
    """examples/connector.toml in the README's layout: /etc/edgetds (here tmp_path/etc) holds the
    config, policy, key and password; the audit log goes to /var/lib/edgetds (here tmp_path/state,
    the one path the test changes)."""
    etc, state = tmp_path / "etc", tmp_path / "state"
    etc.mkdir()
    state.mkdir()
    shutil.copy(REPO / "examples" / "policy.toml", etc / "policy.toml")
    generate_key_files(etc, "conn-1")  # edgetds keygen --out /etc/edgetds --name conn-1
    relay = generate_key_files(tmp_path, "relay")
    for login in ("reader", "writer"):
        (etc / f"{login}.password").write_text("pw\n")
        (etc / f"{login}.password").chmod(0o600)
    text = (REPO / "examples" / "connector.toml").read_text()
    assert '"/var/lib/edgetds/audit.jsonl"' in text
    text = text.replace("/var/lib/edgetds/", f"{state}/")
    (etc / "connector.toml").write_text(
        re.sub(
            r'relay_public_keys = \["ed25519:[^"]+"\]',
            f'relay_public_keys = ["{relay.public_key}"]',
            text,
        )
    )
    done = await edgetds(
        "connector",
        "check",
        "--config",
        str(etc / "connector.toml"),
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"ok: connector 'conn-1' for tunnel 'sales'" in done.stdout
    assert b"roles: analyst, admin" in done.stdout
    assert f"audit: {state}/audit.jsonl".encode() in done.stdout


async def test_check_lists_every_problem_with_its_location(tmp_path: Path) -> None:
    (tmp_path / "connector.toml").write_text(
        """
[connector]
id = "conn 1"
tunnel = "demo"
relay_urls = ["https://relay.example.com"]
private_key_file = "missing.key"
relay_public_keys = ["ed25519:short"]
ha_connections = 7

[database]
host = "db"
database = "x"

[logins.reader]
user = "r"
password = "inline-secret"

[policy]
file = "policy.toml"
"""
    )
    done = await edgetds("connector", "check", "--config", str(tmp_path / "connector.toml"))
    assert done.returncode == 1
    err = done.stderr.decode()
    for where in (
        "[connector.id]",
        "[connector.relay_urls[0]]",
        "[connector.private_key_file]",
        "[connector.relay_public_keys[0]]",
        "[connector.ha_connections]",
        "[logins.reader.password]",
        "[issuers]",
        "[policy.file]",
    ):
        assert where in err, where
    assert "inline-secret" not in err
    assert str(tmp_path / "connector.toml") in err


async def test_explain_shows_the_role_and_why(tmp_path: Path, keys: Keys, idp: DevIdP) -> None:
    path = config_for(tmp_path, keys, idp, "ws://127.0.0.1:9", db_port=closed_port())
    token = idp.mint(sub="alice", groups=["analysts"])
    done = await edgetds("connector", "explain", "--config", str(path), "--token", token)
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    assert "subject 'alice'" in out
    assert "role analyst: MATCH via groups=analysts" in out
    expired = idp.mint(sub="alice", groups=["analysts"], expires_in=-300)
    refused = await edgetds("connector", "explain", "--config", str(path), "--token", expired)
    assert refused.returncode == 1
    assert b"auth.expired" in refused.stderr
    assert encode_public_key(keys.relay) not in out


async def test_check_explains_claim_matching_misuse(
    tmp_path: Path, keys: Keys, idp: DevIdP
) -> None:
    path = config_for(tmp_path, keys, idp, "ws://127.0.0.1:9", db_port=closed_port())
    (path.parent / "policy.toml").write_text(
        """
[[deny]]
match = { groups = [" contractors"] }

[roles.reader]
login = "reader"

[roles.reader.match]
groups = { values = ["readers"], split = "space" }
scope = { values = ["a"], split = "csv" }
"""
    )
    done = await edgetds("connector", "check", "--config", str(path))
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "[deny #1] key 'match.groups': value ' contractors' is empty or has leading" in err
    assert "[roles.reader] key 'match.groups': split = \"space\" is for a claim that is ONE" in err
    assert "[roles.reader] key 'match.scope': split = 'csv' is not supported" in err
    assert "3 problem(s)" in err
