"""Every example under examples/ is usable as shipped: each connector config passes
`edgetds connector check` (given dummy key and secret files where it names them), and the systemd
unit passes `systemd-analyze verify`. An example that does not parse is a defect.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from edgetds.cli import main
from identity.keys import generate_key_files

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: the annotated reference (examples/connector.toml) and the production examples
CONFIGS = [EXAMPLES / "connector.toml", *sorted(EXAMPLES.glob("*/connector.toml"))]


def _provide_secrets(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Create the files (relative paths only) and env vars that `config` says hold secrets."""
    doc: dict[str, Any] = tomllib.loads(config.read_text())
    base = config.parent
    connector = doc["connector"]
    if "private_key_file" in connector:
        key = Path(connector["private_key_file"])
        assert not key.is_absolute(), "examples keep the key next to the config"
        generate_key_files(base / key.parent, key.stem)
    if "private_key_env" in connector:
        monkeypatch.setenv(connector["private_key_env"], "-----BEGIN PRIVATE KEY-----")
    for login in doc.get("logins", {}).values():
        if "password_file" in login:
            secret = base / login["password_file"]
            secret.parent.mkdir(parents=True, exist_ok=True)
            secret.write_text("dummy-password\n")
            secret.chmod(0o600)
        if "password_env" in login:
            monkeypatch.setenv(login["password_env"], "dummy-password")
        for key in ("keytab", "certificate_file", "client_secret_file"):
            if key in login and not Path(login[key]).is_absolute():
                (base / login[key]).write_text("dummy secret\n")
                (base / login[key]).chmod(0o600)
    for path in (doc.get("database", {}).get("cafile"), connector.get("relay_cafile")):
        if path and not Path(path).is_absolute():  # an absolute one is the system's: never write it
            (base / path).write_text("dummy CA bundle\n")


@pytest.mark.parametrize("example", CONFIGS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_config_passes_connector_check(
    example: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = tmp_path / "example"
    shutil.copytree(example.parent, work)
    config = work / "connector.toml"
    # the state directory the systemd unit provides (/var/lib/edgetds), here a temporary one
    state = tmp_path / "state"
    state.mkdir()
    config.write_text(config.read_text().replace("/var/lib/edgetds/", f"{state}/"))
    _provide_secrets(config, monkeypatch)
    code = main(["connector", "check", "--config", str(config)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.startswith("ok: connector "), out.out


def test_the_examples_we_promise_exist() -> None:
    for name in (
        "okta/connector.toml",
        "entra/connector.toml",
        "windows-auth/connector.toml",
        "rls/policy.toml",
        "rls/rls.sql",
        "sql/create-logins.sql",
        "systemd/edgetds-connector.service",
        "systemd/edgetds-connector@.service",
    ):
        assert (EXAMPLES / name).is_file(), name
    assert "SESSION_CONTEXT(N'edgetds.sub')" in (EXAMPLES / "rls" / "rls.sql").read_text()
    entra = (EXAMPLES / "entra" / "connector.toml").read_text()
    assert "GROUPS OVERAGE" in entra


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize(
    ("name", "instance"),
    [
        ("edgetds-connector.service", ""),
        ("edgetds-connector@.service", "edgetds-connector@2.service"),
    ],
)
def test_systemd_unit_verifies(tmp_path: Path, name: str, instance: str) -> None:
    unit = (EXAMPLES / "systemd" / name).read_text()
    assert "Type=notify" in unit
    assert "NotifyAccess=all" in unit  # the onefile launcher's child sends READY=1
    if instance:  # the template: every replica runs the same config as replica %i
        assert unit.count("--config /etc/edgetds/connector.toml --replica %i") == 2
    # verify needs the binary to exist: point ExecStart at one that does
    copy = tmp_path / name
    copy.write_text(unit.replace("/usr/local/bin/edgetds", shutil.which("true") or "/bin/true"))
    # a template verifies as one of its instances (a link named like it, next to it)
    target = tmp_path / instance if instance else copy
    if instance:
        target.symlink_to(copy)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(target)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Unknown" not in done.stderr, done.stderr


def test_the_replica_template_and_readme_agree_on_audit_checkpoints() -> None:
    """Replicas of one connector id each get a checkpoint of their own audit file (relay/
    checkpoints.py): the template's comments and README section 10 say so, and neither tells
    operators to give replicas separate connector ids for checkpoints."""
    template = (EXAMPLES / "systemd" / "edgetds-connector@.service").read_text()
    comments = " ".join(line.lstrip("# ") for line in template.splitlines() if line[:1] == "#")
    readme = (EXAMPLES.parent / "README.md").read_text()
    section = readme[readme.index("### 10. The audit log") :]
    section = " ".join(section[: section.index("\n### ", 1)].split())
    verify = "edgetds audit verify audit-N.jsonl.* audit-N.jsonl --checkpoint"
    assert "one per connector id and audit file" in comments
    assert verify in " ".join(comments.split())
    assert "each gets its own checkpoint" in section
    assert verify in section
    assert "checkpoints then conflict" not in section
    assert "its own connector id" not in section
