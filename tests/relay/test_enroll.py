"""The Python relay's enrolment state (SPEC.md 8.7): `[relay] enrollment_file` across restarts
and SIGHUP, a damaged file refused naming its path, the failed-auth limiter, enrolment off, and
`edgetds relay enroll --config`. Real relays (in process over sockets, or the `edgetds relay
serve` process), real keys; what both relays must do is in tests/conformance/test_enroll.py.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.exceptions import InvalidStatus
from websockets.trio.client import connect

from identity.keys import load_private_key
from protocol import (
    canonical_json,
    make_connector_token,
    make_enroll_request,
    make_enroll_token,
    parse_enroll_token,
    public_key_text,
)
from relay.config import ConfigError, load_config
from relay.server import open_relay
from tests.ops.test_reload import _events
from tests.ops.test_rotation import _start_relay, _until
from tests.relay.test_relay_config_cli import write_config

EDGETDS = [sys.executable, "-m", "edgetds"]


def enrolling_config(tmp_path: Path, *, extra_limits: str = "") -> Path:
    """The example relay.toml with real keys, enrolment on (state/enrolled.json) and a tunnel
    `sales` that has only enrolled connectors."""
    path = write_config(tmp_path)
    (tmp_path / "state").mkdir()
    text = path.read_text().replace(
        'enrollment_file = ""', 'enrollment_file = "state/enrolled.json"'
    )
    text = text.replace('public_url = ""', 'public_url = "http://127.0.0.1:8787"')
    text, found = re.subn(
        r"(?m)^(\[tunnels\.sales\]\n)connectors = .*$", r"\1connectors = {}", text
    )
    assert found == 1, "examples/relay.toml no longer has [tunnels.sales] with its connectors"
    text = text.replace("[limits]", f"[limits]{extra_limits}")
    path.write_text(text)
    return path


def enrol_token(config: Path, url: str, *, connector_id: str = "conn-9") -> str:
    key = load_private_key(config.parent / "keys" / "relay.key")
    return make_enroll_token(
        key, relay_url=url, tunnel="sales", connector_id=connector_id, now=int(time.time())
    )


async def post(client: httpx.AsyncClient, url: str, body: object) -> httpx.Response:
    return await client.post(f"{url}/v1/tunnels/sales/enroll", content=canonical_json(body))


async def upgrade(ws_url: str, key: Ed25519PrivateKey, connector_id: str = "conn-9") -> int:
    """Dial as ``connector_id`` with ``key``: 101 when the relay accepts the key, else the
    refusal's status."""
    token = make_connector_token(
        key, connector_id=connector_id, tunnel="sales", now=int(time.time())
    )
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{ws_url}/v1/tunnels/sales/connect"
    try:
        async with connect(url, subprotocols=["edgetds.v1"], additional_headers=headers) as ws:  # type: ignore[list-item]
            await ws.recv()  # HELLO
    except InvalidStatus as exc:
        return exc.response.status_code
    return 101


async def test_enrolled_keys_and_used_tokens_survive_a_restart(tmp_path: Path) -> None:
    config = load_config(enrolling_config(tmp_path))
    key = Ed25519PrivateKey.generate()
    with trio.fail_after(60):
        async with open_relay(config) as running, httpx.AsyncClient() as client:
            text = enrol_token(tmp_path / "relay.toml", running.http_url)
            assert (
                await post(client, running.http_url, make_enroll_request(text, key))
            ).status_code == 200
            assert await upgrade(running.ws_url, key) == 101
        assert (tmp_path / "state" / "enrolled.json").stat().st_mode & 0o777 == 0o600
        async with open_relay(config) as running, httpx.AsyncClient() as client:
            assert await upgrade(running.ws_url, key) == 101
            again = await post(client, running.http_url, make_enroll_request(text, key))
            assert (again.status_code, again.json()["error"]["code"]) == (409, "enroll.used")
            assert await upgrade(running.ws_url, Ed25519PrivateKey.generate()) == 401


async def test_sighup_keeps_enrolled_keys_and_a_damaged_file_is_refused_by_path(
    tmp_path: Path,
) -> None:
    path = enrolling_config(tmp_path)
    state = tmp_path / "state" / "enrolled.json"
    log = tmp_path / "relay.log"
    key = Ed25519PrivateKey.generate()
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            relay = await _start_relay(path, log, nursery)
            ws_url = "ws" + relay.url.removeprefix("http")
            text = enrol_token(path, relay.url)
            assert (
                await post(client, relay.url, make_enroll_request(text, key))
            ).status_code == 200

            async def reloaded(n: int) -> bool:
                events = _events(log, "relay.reloaded") + _events(log, "relay.reload_failed")
                return len(events) >= n

            relay.process.send_signal(signal.SIGHUP)
            await _until("the relay reloads", lambda: reloaded(1))
            assert len(_events(log, "relay.reloaded")) == 1
            assert await upgrade(ws_url, key) == 101
            # a damaged file: the reload is refused naming the path, the enrolled key still works
            good = state.read_text()
            state.write_text(good[: len(good) // 2])
            relay.process.send_signal(signal.SIGHUP)
            await _until("the reload is refused", lambda: reloaded(2))
            (failed,) = _events(log, "relay.reload_failed")
            assert str(state) in json.dumps(failed)
            assert await upgrade(ws_url, key) == 101
            relay.process.send_signal(signal.SIGTERM)
            assert await relay.process.wait() == 0
        # ... and start-up refuses it, naming the path
        done = await trio.run_process(
            [*EDGETDS, "relay", "serve", "--config", str(path)], capture_stderr=True, check=False
        )
    assert done.returncode == 2
    assert f"enrollment_file {state} is not an enrolment state file" in done.stderr.decode()


async def test_refused_enrolments_count_against_the_failed_auth_limit(tmp_path: Path) -> None:
    path = enrolling_config(
        tmp_path, extra_limits="\nauth_failure_burst = 2\nauth_failures_per_second = 0.01"
    )
    text = (
        path.read_text()
        .replace("auth_failure_burst = 20", "")
        .replace("auth_failures_per_second = 1.0", "")
    )
    path.write_text(text)
    config = load_config(path)
    with trio.fail_after(60):
        async with open_relay(config) as running, httpx.AsyncClient() as client:
            stranger = make_enroll_token(
                Ed25519PrivateKey.generate(), relay_url=running.http_url, tunnel="sales",
                connector_id="conn-9", now=int(time.time()),
            )  # fmt: skip
            body = make_enroll_request(stranger, Ed25519PrivateKey.generate())
            codes = [(await post(client, running.http_url, body)).status_code for _ in range(3)]
            assert codes == [401, 401, 429]
            limited = await post(client, running.http_url, body)
            assert int(limited.headers["retry-after"]) >= 1
            assert limited.json()["error"]["code"] == "limits.rate_limited"
            stats = (await client.get(f"{running.http_url}/v1/relay/stats")).json()
            assert stats["refused"]["enroll.invalid_token"] == 2
            assert stats["refused"]["limits.rate_limited"] == 2


async def test_enrolment_is_off_without_an_enrollment_file(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    with trio.fail_after(30):
        async with open_relay(config) as running, httpx.AsyncClient() as client:
            key = load_private_key(tmp_path / "keys" / "relay.key")
            text = make_enroll_token(
                key, relay_url=running.http_url, tunnel="sales", connector_id="conn-9",
                now=int(time.time()),
            )  # fmt: skip
            url = f"{running.http_url}/v1/tunnels/sales/enroll"
            response = await client.post(url, json=make_enroll_request(text, key))
    assert (response.status_code, response.json()["error"]["code"]) == (404, "enroll.disabled")
    assert "enrollment_file" in response.json()["error"]["message"]


def test_a_tunnel_without_connectors_needs_enrolment(tmp_path: Path) -> None:
    path = enrolling_config(tmp_path)
    assert dict(load_config(path).tunnels["sales"].connectors) == {}
    path.write_text(path.read_text().replace('"state/enrolled.json"', '""'))
    with pytest.raises(
        ConfigError, match=r"\[tunnels.sales\]: connectors = .* unless \[relay\] enrollment_file"
    ):
        load_config(path)


async def test_relay_enroll_with_the_config_uses_its_key_and_public_url(tmp_path: Path) -> None:
    path = enrolling_config(tmp_path)
    command = [*EDGETDS, "relay", "enroll", "--tunnel", "sales", "--connector", "conn-9"]
    with trio.fail_after(60):
        made = await trio.run_process([*command, "--config", str(path)], capture_stdout=True,
                                      capture_stderr=True)  # fmt: skip
        claims = parse_enroll_token(made.stdout.decode())
        assert (claims.relay_url, claims.tunnel, claims.exp - claims.iat) == (
            "http://127.0.0.1:8787", "sales", 900,
        )  # fmt: skip
        unknown = await trio.run_process(
            [*EDGETDS, "relay", "enroll", "--tunnel", "nope", "--connector", "c", "--config",
             str(path)], capture_stderr=True, check=False,
        )  # fmt: skip
        assert unknown.returncode == 2
        assert "tunnel 'nope' is not in" in unknown.stderr.decode()
        static = f'connectors = {{ "c" = "{public_key_text(Ed25519PrivateKey.generate())}" }}'
        text = path.read_text().replace('"state/enrolled.json"', '""')
        path.write_text(text.replace("connectors = {}", static))
        off = await trio.run_process([*command, "--config", str(path)], capture_stderr=True,
                                     check=False)  # fmt: skip
        assert off.returncode == 2
        assert "no [relay] enrollment_file" in off.stderr.decode()


async def test_a_failed_write_answers_500_and_consumes_nothing(tmp_path: Path) -> None:
    config = load_config(enrolling_config(tmp_path))
    state = tmp_path / "state" / "enrolled.json"
    key = Ed25519PrivateKey.generate()
    with trio.fail_after(60):
        async with open_relay(config) as running, httpx.AsyncClient() as client:
            text = enrol_token(tmp_path / "relay.toml", running.http_url)
            state.mkdir()  # the file cannot be renamed into place now
            failed = await post(client, running.http_url, make_enroll_request(text, key))
            assert (failed.status_code, failed.json()["error"]["code"]) == (500, "internal")
            assert "query_id" in failed.json()["error"]
            assert await upgrade(running.ws_url, key) == 401
            state.rmdir()
            done = await post(client, running.http_url, make_enroll_request(text, key))
            assert done.status_code == 200, done.text
            assert await upgrade(running.ws_url, key) == 101
