"""Start-up as a service manager meets it: `connector check` (the unit's ExecStartPre) refuses an
audit log the connector could not write, `connector run` refuses it the same way, and a file or
port the system refuses at run time ends the connector with one line naming the cause, never a
traceback. The read-only case is a real read-only bind mount (what systemd's ProtectSystem=strict
makes of /etc), in a private mount namespace."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connector.config import load_config
from connector.runtime import open_connector
from identity.keys import encode_public_key, generate_key_files
from tests.support.connector_keys import closed_port
from tests.support.connector_stack import write_connector_config

EDGETDS = [sys.executable, "-m", "edgetds"]


def _config(tmp_path: Path, audit: str, **connector: object) -> Path:
    """A connector.toml whose relay and database are down, with ``audit`` as [audit] file."""
    key = generate_key_files(tmp_path / "keys", "conn-1")
    path = write_connector_config(
        tmp_path / "etc",
        relay_urls=[f"ws://127.0.0.1:{closed_port()}"],
        relay_public_keys=[encode_public_key(Ed25519PrivateKey.generate())],
        private_key_file=key.private_path,
        issuer="https://idp.invalid",
        db_host="127.0.0.1",
        db_port=closed_port(),
        **connector,  # type: ignore[arg-type]
    )
    path.write_text(path.read_text().replace('file = "audit.jsonl"', f"file = {audit!r}"))
    return path


def _run(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, *EDGETDS, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_missing_audit_directory_is_refused_by_check_and_run(tmp_path: Path) -> None:
    missing = tmp_path / "var-lib-edgetds"
    config = _config(tmp_path, str(missing / "audit.jsonl"))
    for command in ("check", "run"):
        done = _run("connector", command, "--config", str(config))
        assert done.returncode == 1, done.stdout + done.stderr
        assert "[audit.file]: cannot write the audit log: directory" in done.stderr
        assert f"{missing} does not exist" in done.stderr
        assert "StateDirectory=edgetds" in done.stderr
        assert "Traceback" not in done.stderr
    missing.mkdir()
    done = _run("connector", "check", "--config", str(config))
    assert done.returncode == 0, done.stderr


def _can_mount_read_only(directory: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", _ro_mount(directory) + " && true"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def _ro_mount(directory: Path) -> str:
    return f"mount --bind '{directory}' '{directory}' && mount -o remount,bind,ro '{directory}'"


def test_an_audit_log_on_a_read_only_mount_is_refused(tmp_path: Path) -> None:
    """/etc under ProtectSystem=strict: read-only for every user, root included."""
    config = _config(tmp_path, "audit.jsonl")  # beside the config, as in /etc/edgetds
    etc = config.parent
    if not _can_mount_read_only(etc):
        pytest.skip("no private mount namespace here (unshare -m needs CAP_SYS_ADMIN)")
    script = _ro_mount(etc) + ' && exec "$@"'
    prefix = ("unshare", "-m", "sh", "-c", script, "sh")
    for command in ("check", "run"):
        done = _run("connector", command, "--config", str(config), prefix=prefix)
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"cannot write the audit log: {etc} is on a read-only file system" in done.stderr
        assert '"/var/lib/edgetds/audit.jsonl"' in done.stderr
        assert "Traceback" not in done.stderr
    assert not (etc / "audit.jsonl").exists()
    done = _run("connector", "check", "--config", str(config))  # writable again outside
    assert done.returncode == 0, done.stderr


def test_an_ops_port_in_use_stops_run_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _config(tmp_path, "audit.jsonl")
        config.write_text(config.read_text() + f'\n[ops]\nlisten = "127.0.0.1:{port}"\n')
        done = _run("connector", "run", "--config", str(config))
    assert done.returncode == 1, done.stdout + done.stderr
    last = json.loads(done.stderr.splitlines()[-1])  # the one line that says why: the last
    assert last["event"] == "stopped", done.stderr
    assert last["reason"].startswith("error: "), last
    assert "ddress already in use" in last["reason"], last
    assert "Traceback" not in done.stderr


async def test_the_logins_are_checked_at_the_same_time(tmp_path: Path) -> None:
    """A database that accepts and never answers: both logins wait on it together, so start-up
    waits one login timeout, not one per login."""
    open_now, most_at_once = 0, 0

    async def silent(stream: trio.SocketStream) -> None:
        nonlocal open_now, most_at_once
        open_now += 1
        most_at_once = max(most_at_once, open_now)
        try:
            while await stream.receive_some():  # answers nothing, until the client's login
                pass  # timeout closes the connection
        except trio.BrokenResourceError:
            pass
        finally:
            open_now -= 1

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, silent, 0)
        config = _config(tmp_path, "audit.jsonl")
        port = listeners[0].socket.getsockname()[1]
        text = config.read_text()
        config.write_text(re.sub(r"(?m)^port = \d+$", f"port = {port}", text, count=1))
        with trio.fail_after(60):
            async with open_connector(load_config(config)) as connector:
                assert set(connector.ops.logins_failing) == {"reader", "writer"}
        nursery.cancel_scope.cancel()
    assert most_at_once == 2
