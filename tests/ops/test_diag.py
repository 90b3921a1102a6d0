"""`edgetds connector diag` against real peers: each broken setup names the right first step.

Healthy: dev IdP + tdslite + the Python relay, all real. Broken: the relay down (tcp), a wrong
relay key pinned (relay_identity), an unregistered connector key (auth), a wrong SQL password
(sql_login), a wss:// relay with a certificate from an unknown CA (tls, issuer printed).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from pathlib import Path

import trio
import trustme
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connector.config import load_config
from connector.diag import DiagReport, Step, run_diag
from identity.keys import encode_public_key, generate_key_files, key_id
from tests.support.ops_stack import Stack, open_stack, write_stack_config
from tests.support.ports import closed_port


def _statuses(report: DiagReport) -> list[tuple[str, str]]:
    return [(s.step, s.status) for s in report.steps]


def _failed_at(report: DiagReport, step: str) -> Step:
    first = report.first_failure
    assert first is not None, report.as_text()
    assert first.step == step, report.as_text()
    return first


async def _diag(path: Path) -> DiagReport:
    with trio.fail_after(30):
        return await run_diag(load_config(path))


async def test_healthy_setup_passes_every_step(tmp_path: Path) -> None:
    async with open_stack(tmp_path) as stack:
        report = await _diag(stack.config_path)
    assert _statuses(report) == [
        ("dns", "ok"),
        ("tcp", "ok"),
        ("tls", "skip"),  # ws:// has no TLS
        ("websocket", "ok"),
        ("auth", "ok"),
        ("relay_identity", "ok"),
        ("idp", "ok"),
        ("sql_login", "ok"),
        ("sql_login", "ok"),
    ], report.as_text()
    assert report.ok
    assert report.first_failure is None
    assert "127.0.0.1" in report.steps[0].detail
    assert "HELLO verified" in report.steps[5].detail


async def test_relay_down_fails_at_tcp(tmp_path: Path) -> None:
    port = closed_port()
    async with open_stack(tmp_path) as stack:
        path = write_stack_config(stack, "down", relay_urls=[f"ws://127.0.0.1:{port}"])
        report = await _diag(path)
    first = _failed_at(report, "tcp")
    assert "refused" in first.detail.lower()
    assert "firewall" in first.hint
    steps = dict(_statuses(report)[:6])
    assert steps["websocket"] == steps["auth"] == steps["relay_identity"] == "skip"
    # the independent checks still ran
    assert ("idp", "ok") in _statuses(report)
    assert ("sql_login", "ok") in _statuses(report)


async def test_wrong_relay_key_fails_at_relay_identity(tmp_path: Path) -> None:
    async with open_stack(tmp_path) as stack:
        wrong = encode_public_key(Ed25519PrivateKey.generate())
        path = write_stack_config(stack, "wrongkey", relay_public_keys=[wrong])
        report = await _diag(path)
    first = _failed_at(report, "relay_identity")
    assert "relay_public_keys" in first.hint
    assert dict(_statuses(report)[:5])["auth"] == "ok"
    # the key the relay presented and the keys pinned are named, so the mismatch is visible
    presented, pinned = key_id(stack.relay.relay_public_key), key_id(wrong)
    assert f"signed by relay key {presented!r}, which is not pinned (pinned: {pinned})" in (
        first.detail
    )


async def test_unregistered_connector_key_fails_at_auth(tmp_path: Path) -> None:
    async with open_stack(tmp_path) as stack:
        other = generate_key_files(tmp_path / "other", "conn-1")
        path = write_stack_config(stack, "unregistered", private_key_file=other.private_path)
        report = await _diag(path)
    first = _failed_at(report, "auth")
    # the status and the relay's error code, not its JSON body
    assert "refused the connection: HTTP 401 auth.invalid_token: " in first.detail, first
    assert "[tunnels.demo]" in first.hint
    assert not first.detail.endswith("\n")


async def test_an_unknown_connector_id_gets_the_line_to_register_it(tmp_path: Path) -> None:
    async with open_stack(tmp_path) as stack:
        other = generate_key_files(tmp_path / "other", "conn-9")
        path = write_stack_config(
            stack, "unknown", private_key_file=other.private_path, connector_id="conn-9"
        )
        report = await _diag(path)
    first = _failed_at(report, "auth")
    assert "connector 'conn-9' is not registered at this relay" in first.detail
    assert "\n" not in first.detail  # the relay's body, without its trailing newline
    line = f'[tunnels.demo] connectors = {{ "conn-9" = "{other.public_key}" }}'
    assert line in first.hint
    assert "TUNNELS" in first.hint  # the Worker's way too


async def test_wss_to_a_plain_http_port_says_so(tmp_path: Path) -> None:
    async with open_stack(tmp_path) as stack:
        plain = stack.relay.ws_url  # the Python relay serves plain HTTP here
        report = await _diag(
            write_stack_config(stack, "wss", relay_urls=[plain.replace("ws://", "wss://")])
        )
    first = _failed_at(report, "tls")
    port = plain.rsplit(":", 1)[1]
    assert f"port {port} does not speak TLS (a plain HTTP server answered)" in first.hint
    assert f"use {plain}" in first.hint


async def test_wrong_sql_password_fails_at_sql_login(tmp_path: Path) -> None:
    async with open_stack(tmp_path) as stack:
        path = write_stack_config(
            stack,
            "badpw",
            logins={"reader": ("reader", "not-the-password"), "writer": ("writer", "writer-pw")},
        )
        report = await _diag(path)
    first = _failed_at(report, "sql_login")
    assert first.target.startswith("reader (reader@127.0.0.1:")
    assert "18456" in first.detail
    assert "password_file" in first.hint
    assert "not-the-password" not in report.as_text()
    assert ("sql_login", "ok") in _statuses(report)  # the writer login still works


async def test_tls_names_the_certificate_issuer(tmp_path: Path) -> None:
    # A wss:// endpoint whose certificate comes from a CA we do not trust (like a TLS-inspecting
    # proxy's): the tls step fails and says so; with that CA as relay_cafile it passes and prints
    # the issuer.
    ca = trustme.CA(organization_name="Corp Inspection CA")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "corp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    async def tls_server(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, server_ctx, server_side=True)
        try:
            await tls.do_handshake()
            await tls.aclose()
        except trio.BrokenResourceError:
            pass

    async with open_stack(tmp_path) as stack, trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, tls_server, 0)
        port = listeners[0].socket.getsockname()[1]
        url = f"wss://127.0.0.1:{port}"
        untrusted = await _diag(write_stack_config(stack, "tls1", relay_urls=[url]))
        trusted = await _diag(
            write_stack_config(stack, "tls2", relay_urls=[url], relay_cafile=str(ca_file))
        )
        nursery.cancel_scope.cancel()
    first = _failed_at(untrusted, "tls")
    assert "certificate verify failed" in first.detail or "unable to get" in first.detail
    tls_step = next(s for s in trusted.steps if s.step == "tls")
    assert tls_step.status == "ok", trusted.as_text()
    assert "Corp Inspection CA" in tls_step.detail
    # past TLS the endpoint is not a relay: the WebSocket step fails, not TLS
    _failed_at(trusted, "websocket")


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from edgetds.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )


async def test_cli_json_output_names_the_first_failure(tmp_path: Path) -> None:
    async with open_stack(tmp_path) as stack:
        good = stack.config_path
        bad = write_stack_config(
            stack, "badpw", logins={"reader": ("reader", "nope"), "writer": ("writer", "nope")}
        )
        ok_run, bad_run = await trio.to_thread.run_sync(_both, good, bad, stack)
    assert ok_run.returncode == 0, ok_run.stdout + ok_run.stderr
    assert "all checks passed" in ok_run.stdout
    assert bad_run.returncode == 1, bad_run.stdout + bad_run.stderr
    doc = json.loads(bad_run.stdout)
    assert doc["ok"] is False
    assert doc["first_failure"]["step"] == "sql_login"
    assert [s["step"] for s in doc["steps"]][:6] == [
        "dns",
        "tcp",
        "tls",
        "websocket",
        "auth",
        "relay_identity",
    ]


def _both(
    good: Path, bad: Path, stack: Stack
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    del stack
    return (
        _run_cli("connector", "diag", "--config", str(good)),
        _run_cli("connector", "diag", "--config", str(bad), "--json"),
    )
