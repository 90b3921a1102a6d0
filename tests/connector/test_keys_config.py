"""identity/keys.py (`edgetds keygen` files) and connector/config.py (errors naming file/key)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connector.config import ConfigError, load_config
from identity.keys import (
    KeyFileError,
    encode_public_key,
    generate_key_files,
    key_id,
    load_private_key,
    parse_public_key,
)


def test_keygen_writes_private_0600_and_public(tmp_path: Path) -> None:
    gen = generate_key_files(tmp_path, "conn-1")
    assert stat.S_IMODE(gen.private_path.stat().st_mode) == 0o600
    assert gen.public_path.read_text() == gen.public_key + "\n"
    key = load_private_key(gen.private_path)
    assert encode_public_key(key) == gen.public_key
    assert key_id(gen.public_key) == gen.key_id
    assert len(gen.key_id) == 16
    # round trip through the public string form
    pub = parse_public_key(gen.public_key)
    sig = key.sign(b"m")
    pub.verify(sig, b"m")
    with pytest.raises(KeyFileError, match="already exists"):
        generate_key_files(tmp_path, "conn-1")


def test_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    gen = generate_key_files(tmp_path, "k")
    os.chmod(gen.private_path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_private_key(gen.private_path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("abc", "must start with"), ("ed25519:!!!", "base64url"), ("ed25519:AAAA", "32 bytes")],
)
def test_bad_public_keys(text: str, fragment: str) -> None:
    with pytest.raises(KeyFileError, match=fragment):
        parse_public_key(text)


def test_key_id_matches_the_fixed_definition() -> None:
    import base64
    import hashlib

    key = Ed25519PrivateKey.generate()
    raw = base64.urlsafe_b64decode(encode_public_key(key)[8:] + "=")
    expected = base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).rstrip(b"=")[:16]
    assert key_id(key) == expected.decode()


def _write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "connector.toml"
    path.write_text(body)
    return path


def _valid(tmp_path: Path) -> str:
    gen = generate_key_files(tmp_path, "conn-1")
    relay = generate_key_files(tmp_path, "relay")
    (tmp_path / "reader.pw").write_text("s3cret\n")
    (tmp_path / "reader.pw").chmod(0o600)
    return f"""
[connector]
id = "conn-1"
tunnel = "demo"
relay_urls = ["ws://127.0.0.1:9"]
private_key_file = "{gen.private_path.name}"
relay_public_keys = ["{relay.public_key}"]

[database]
host = "127.0.0.1"
port = 1433
database = "demo"

[logins.reader]
user = "reader"
password_file = "reader.pw"

[[issuers]]
issuer = "http://127.0.0.1:1"
audience = "edgetds"

[policy]
default_role = "none"
"""


def test_valid_config_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(_write_config(tmp_path, _valid(tmp_path)))
    assert cfg.tunnel.ha_connections == 2
    assert cfg.tunnel.drain_grace_s == 30.0
    assert cfg.database.logins["reader"].password == "s3cret"
    assert "s3cret" not in repr(cfg)
    assert cfg.tunnel.private_key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert "PRIVATE" not in repr(cfg.tunnel)


def test_every_problem_is_reported_with_its_location(tmp_path: Path) -> None:
    body = _valid(tmp_path)
    body = body.replace('relay_urls = ["ws://127.0.0.1:9"]', 'relay_urls = ["http://x"]')
    body = body.replace('tunnel = "demo"', 'tunnel = "demo"\nha_connections = 9\nbogus = 1')
    body = body.replace('password_file = "reader.pw"', 'password = "inline"')
    body = body.replace("port = 1433", 'port = "1433"')
    with pytest.raises(ConfigError) as info:
        load_config(_write_config(tmp_path, body))
    text = str(info.value)
    locations = {p.location for p in info.value.problems}
    assert {
        "connector.relay_urls[0]",
        "connector.ha_connections",
        "connector.bogus",
        "logins.reader.password",
        "database.port",
    } <= locations
    assert "connector.toml" in text
    assert "never read from the config file" in text
    assert "inline" not in text  # the secret value itself is never echoed


def test_secret_from_env_and_missing_env(tmp_path: Path) -> None:
    body = _valid(tmp_path).replace('password_file = "reader.pw"', 'password_env = "READER_PW"')
    cfg = load_config(_write_config(tmp_path, body), env={"READER_PW": "from-env"})
    assert cfg.database.logins["reader"].password == "from-env"
    with pytest.raises(ConfigError, match="READER_PW"):
        load_config(_write_config(tmp_path, body), env={})


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_password_file_others_can_read_is_refused_like_a_key_file(
    tmp_path: Path, mode: int
) -> None:
    body = _valid(tmp_path)
    (tmp_path / "reader.pw").chmod(mode)
    with pytest.raises(ConfigError) as info:
        load_config(_write_config(tmp_path, body))
    (problem,) = info.value.problems
    assert problem.location == "logins.reader.password_file"
    assert f"(mode {mode:o}); run: chmod 600 " in problem.message
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    "url", ["ws://127.0.0.1:9/v1/tunnels/demo/connect", "wss://relay.example.com/edgetds"]
)
def test_a_relay_url_with_a_path_is_refused(tmp_path: Path, url: str) -> None:
    body = _valid(tmp_path).replace('relay_urls = ["ws://127.0.0.1:9"]', f'relay_urls = ["{url}"]')
    with pytest.raises(ConfigError) as info:
        load_config(_write_config(tmp_path, body))
    (problem,) = info.value.problems
    assert problem.location == "connector.relay_urls[0]"
    assert "give the relay's base URL only" in problem.message
    assert "appends /v1/tunnels/TUNNEL/connect" in problem.message


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write_config(tmp_path, "[connector\n"))
