"""Relay configuration (TOML -> RelayConfig, errors that say how to fix them) and the CLI."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from edgetds.cli import main
from identity.keys import encode_public_key, generate_key_files
from relay.config import ConfigError, load_config
from tests.support.processes import first_line

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "relay.toml"


def write_config(tmp_path: Path, *, listen: str = "127.0.0.1:0", extra: str = "") -> Path:
    """The example config with real keys, listening on `listen`."""
    generate_key_files(tmp_path / "keys", "relay")
    conn = generate_key_files(tmp_path / "keys", "conn-1")
    text = EXAMPLE.read_text()
    text = text.replace("ed25519:REPLACE_WITH_THE_LINE_FROM_conn-1.pub", conn.public_key)
    text = text.replace('listen = "127.0.0.1:8787"', f'listen = "{listen}"')
    path = tmp_path / "relay.toml"
    path.write_text(text + extra)
    return path


def test_the_example_config_loads(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    assert config.listen == "127.0.0.1:0"
    assert list(config.tunnels) == ["sales"]
    key = (tmp_path / "keys" / "conn-1.pub").read_text().strip()
    assert [encode_public_key(k) for k in config.tunnels["sales"].connectors["conn-1"]] == [key]
    assert config.identity["issuers"][0]["issuer"] == "http://127.0.0.1:8080"
    assert config.limits.max_body_bytes == 1048576
    assert config.limits.max_param_bytes == 262144
    assert config.limits.query_burst == 200
    assert config.tunnels["sales"].max_queries_per_identity == 32
    assert config.limits.admission_wait_ms == 5000


#: Edits of the example config that `relay serve` refuses at start, each with a piece of its
#: message (tests/ops/test_reload.py checks that SIGHUP refuses every one of them too).
STARTUP_REFUSALS: list[tuple[tuple[str, str], str]] = [
    (("[relay]", "[relay]\nlisten_port = 1"), "unknown key(s) listen_port"),
    (('listen = "127.0.0.1:0"', 'listen = "localhost"'), "is not HOST:PORT"),
    (('"keys/relay.key"', '"keys/missing.key"'), "private_key_file"),
    (('tls_cert_file = ""', 'tls_cert_file = "cert.pem"'), "set both tls_cert_file"),
    (("query_burst = 200", 'query_burst = "lots"'), "query_burst must be a number"),
    (("query_burst = 200", "query_burst = 2.5"), "query_burst must be a whole number"),
    (("max_body_bytes = 1048576", "max_body_bytes = -1"), "max_body_bytes must be >= 0"),
    (("max_param_bytes = 262144", "max_param_bytes = 10"), "max_param_bytes must be at least"),
    (("dead_after_s = 45.0", "dead_after_s = 1.0"), "ping_interval_s < dead_after_s"),
    (('stats_token_sha256 = ""', 'stats_token_sha256 = "abc"'), "64 hex digits"),
    (("[[issuers]]", "[[not_issuers]]"), "unknown key(s) not_issuers"),
    (
        ("max_queries_per_identity = 32", "max_queries_per_identity = 0"),
        "max_queries_per_identity must be a whole number >= 1",
    ),
    (('audience = "edgetds"', 'audience = "edgetds"\njwks_url = "x"'), "jwks_url"),
    (('audience = "edgetds"', 'audience = "edgetds"\nalgorithms = "RS256"'), "algorithms"),
    (("[limits]", "[identity]\nleeway_s = -1\n[limits]"), "leeway_s"),
    (('checkpoint_file = ""', 'checkpoint_file = "relay.toml"'), "is not a checkpoint file"),
    (('audit_token_sha256 = ""', 'audit_token_sha256 = "abc"'), "64 hex digits"),
    (('enrollment_file = ""', 'enrollment_file = "relay.toml"'), "is not an enrolment state file"),
    (('enrollment_file = ""', 'enrollment_file = "gone/enrolled.json"'), "does not exist"),
    (
        (
            '# cors_origins = ["https://app.example.com", ',
            'cors_origins = ["https://app.example.com/", ',
        ),
        "has a path (a trailing / too)",
    ),
]


@pytest.mark.parametrize(("edit", "needle"), STARTUP_REFUSALS)
def test_config_errors_name_the_key(tmp_path: Path, edit: tuple[str, str], needle: str) -> None:
    path = write_config(tmp_path)
    text = path.read_text()
    assert edit[0] in text
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert needle in str(info.value)


def test_a_connector_id_may_list_several_keys_while_it_rotates(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    old = (tmp_path / "keys" / "conn-1.pub").read_text().strip()
    new = generate_key_files(tmp_path / "keys", "conn-1-new").public_key
    text = path.read_text()
    path.write_text(text.replace(f'"{old}"', f'["{new}", "{old}"]', 1))
    keys = load_config(path).tunnels["sales"].connectors["conn-1"]
    assert [encode_public_key(k) for k in keys] == [new, old]
    for listed, needle in [
        ("[]", "while rotating its key, a list"),
        (f'["{new}", "{new}"]', "the same key is listed twice"),
        (f'["{new}", "ed25519:!!"]', r"connectors.conn-1[1]"),
        ("42", "while rotating its key, a list"),
    ]:
        path.write_text(text.replace(f'"{old}"', listed, 1))
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert needle in str(info.value)


def test_bad_public_key_and_missing_parts(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    text = path.read_text()
    path.write_text(text.replace('"ed25519:', '"ed25519:!!', 1))
    with pytest.raises(ConfigError, match=r"tunnels\.sales\] connectors\.conn-1"):
        load_config(path)
    path.write_text('[relay]\nprivate_key_file = "keys/relay.key"\n')
    with pytest.raises(ConfigError, match=r"no \[tunnels\.NAME\] table"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read relay config"):
        load_config(tmp_path / "nope.toml")
    path.write_text("[relay\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_issuers_and_tls_files_are_checked_when_the_config_loads(tmp_path: Path) -> None:
    # what serving builds from the file (the token verifier, the TLS context) is checked by
    # load_config itself, so start-up and SIGHUP refuse the same configs
    path = write_config(tmp_path)
    text = path.read_text()
    path.write_text(text.replace("http://127.0.0.1:8080", "http://idp.example.com"))
    with pytest.raises(ConfigError, match="must be an https URL"):
        load_config(path)
    path.write_text(text.replace('audience = "edgetds"', 'audience = "edgetds"\njwks_url = "x"'))
    with pytest.raises(ConfigError, match="jwks_url"):
        load_config(path)
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    path.write_text(
        text.replace('tls_cert_file = ""', 'tls_cert_file = "cert.pem"').replace(
            'tls_key_file = ""', 'tls_key_file = "cert.pem"'
        )
    )
    with pytest.raises(ConfigError, match="do not load as a PEM certificate"):
        load_config(path)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    text = path.read_text()
    for old, new in [
        ("[relay]", "[relay]\nlisten_port = 1"),
        ('"keys/relay.key"', '"keys/missing.key"'),
        ("query_burst = 200", 'query_burst = "lots"'),
        ("dead_after_s = 45.0", "dead_after_s = 1.0"),
        ('audience = "edgetds"', 'audience = "edgetds"\njwks_url = "x"'),
    ]:
        assert old in text
        text = text.replace(old, new, 1)
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    for needle in (
        "unknown key(s) listen_port",
        "cannot read private key file",
        "query_burst must be a number",
        "ping_interval_s < dead_after_s",
        "jwks_url",
    ):
        assert sum(needle in p for p in problems) == 1, (needle, problems)
    assert len(problems) == 5
    assert str(info.value) == "\n".join(problems)


async def test_cli_serve_prints_the_url_first_and_drains_on_sigterm(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "edgetds", "relay", "serve", "--config", str(path), "--grace", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        with trio.fail_after(20):
            text = await first_line(process)
            assert text.startswith("relay listening on http://127.0.0.1:")
            url = text.split()[-1]
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"{url}/healthz")).status_code == 200
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_cli_bad_config_exits_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["relay", "serve", "--config", str(tmp_path / "x.toml")]) == 2
    out = capsys.readouterr()
    assert "cannot read relay config" in out.err
    assert out.out == ""
    path = write_config(tmp_path)
    assert main(["relay", "serve", "--config", str(path), "--listen", "nowhere"]) == 2
    assert "is not HOST:PORT" in capsys.readouterr().err


def test_cli_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["relay", "serve", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "edgetds relay serve --config" in out
    assert main(["relay"]) == 2  # no subcommand: usage on stderr
    assert "serve" in capsys.readouterr().err
