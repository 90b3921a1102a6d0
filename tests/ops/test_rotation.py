"""Key rotation as the README documents it, with real relays, connectors, tdslite and tokens.

- Live, by SIGHUP to the real `edgetds relay serve` and `edgetds connector run` processes: relay
  key switched, connector key registered twice, switched and the old one removed, under a steady
  stream of queries: none fails, sessions made before the relay key switch keep serving, a broken
  config is refused and the running one kept, the stale key is refused afterwards.
- In process: a reload keeps a live session on the relay key its HELLO was signed with (a
  connector that pinned only that key keeps serving, but refuses new connections); a revoked
  connector key's session is drained and its redial refused; a connector that unpins a relay key
  replaces its connections make-before-break without a failed query.
- By restart (no reload): the connector pins the old AND the new relay key and reconnects to the
  restarted relay; one that pinned only the old key serves nothing to it. Connector key rotation
  through a second connector id also works (the old connector drains away, no failed query).
"""

from __future__ import annotations

import dataclasses
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connector.config import load_config
from connector.runtime import open_connector
from identity.keys import (
    encode_public_key,
    generate_key_files,
    key_id,
    load_private_key,
)
from relay.config import TunnelConfig
from relay.server import RunningRelay
from tests.support.ops_stack import (
    Stack,
    open_stack,
    post_query,
    write_relay_toml,
    write_stack_config,
)
from tests.support.ports import reserved_port
from tests.support.protocol_peer import open_peer
from tests.support.relays import TEST_LIMITS, open_python_relay
from tests.support.waiting import eventually


async def _query_ok(stack: Stack, failures: list[object] | None = None) -> bool:
    status, lines = await post_query(stack, sql="SELECT 1 AS n")
    ok = status == 200 and "done" in lines[-1]
    if not ok and failures is not None:
        failures.append((status, lines[-1] if lines else None))
    return ok


async def test_relay_key_rotation_with_both_keys_pinned(tmp_path: Path) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    pins = [encode_public_key(old), encode_public_key(new)]
    port = reserved_port()
    url = f"ws://127.0.0.1:{port}"
    async with open_stack(tmp_path, relay=False) as stack:
        both = write_stack_config(stack, "both", relay_urls=[url], relay_public_keys=pins)
        stale = write_stack_config(stack, "old", relay_urls=[url], relay_public_keys=pins[:1])
        # connectors first (they outlive both relays), then the relay before and after rotation
        with trio.fail_after(60):
            async with (
                open_connector(load_config(both)) as rotating,
                open_connector(load_config(stale)) as stale_connector,
            ):
                async with stack.run_relay(listen=f"127.0.0.1:{port}", relay_key=old):
                    await rotating.wait_ready()
                    await stale_connector.wait_ready()
                    before = await _query_ok(stack)
                    reconnects = rotating.reconnects
                # the old relay is gone once the connector saw its links end (else a link it has
                # not yet seen closed would count as ready at the new relay)
                while rotating.ready_links:
                    await rotating.wait_changed()
                async with stack.run_relay(listen=f"127.0.0.1:{port}", relay_key=new):
                    await rotating.wait_ready()
                    after = await _query_ok(stack)
                    await trio.sleep(1.0)  # the stale connector dials (and refuses) meanwhile
                    stale_ready = stale_connector.ready_links
                    stale_tries = stale_connector.reconnects
    assert before
    assert after
    assert rotating.reconnects > reconnects
    assert stale_ready == 0  # pinned only the old key: serves nothing to the rotated relay
    assert stale_tries >= 2


async def test_connector_key_rotation_without_a_failed_query(tmp_path: Path) -> None:
    async with open_stack(tmp_path, connector_ids=("conn-1", "conn-1b")) as stack:
        old = load_config(stack.config_path)
        new = load_config(
            write_stack_config(
                stack,
                "new",
                connector_id="conn-1b",
                private_key_file=stack.keys["conn-1b"].private_path,
            )
        )
        results: list[bool] = []
        failures: list[object] = []
        with trio.fail_after(60):
            async with open_connector(old) as old_connector:
                await old_connector.wait_ready()

                async def traffic(stop: trio.Event) -> None:
                    while not stop.is_set():
                        results.append(await _query_ok(stack, failures))
                        await trio.sleep(0.02)

                stop = trio.Event()
                async with open_connector(new) as new_connector:
                    await new_connector.wait_ready()
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(traffic, stop)
                        await trio.sleep(0.3)  # both serve
                        await old_connector.shutdown()  # the old key's connector drains away
                        during = len(results)
                        await trio.sleep(0.5)  # only the new one serves
                        stop.set()
                    served_by_new = new_connector.service.counts.get("ok", 0)
    assert results, "no traffic ran"
    assert all(results), f"{results.count(False)} of {len(results)} failed: {failures}"
    assert len(results) > during  # queries kept running after the old connector left
    assert served_by_new > 0


# -- live rotation: SIGHUP to the real `edgetds relay serve` and `edgetds connector run` ----------

PYTHON = [sys.executable, "-m", "edgetds"]


class _Relay:
    """`edgetds relay serve` in a subprocess; its address, stats and a query client."""

    def __init__(self, process: trio.Process, url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"{self.url}/v1/relay/stats")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    async def sessions(self, *, serving_only: bool = True) -> set[str]:
        detail = (await self.stats())["tunnels"]["demo"]["sessions"]
        return {s["session_id"] for s in detail if not (serving_only and s["draining"])}

    async def query(self, client: httpx.AsyncClient, token: str) -> tuple[int, str]:
        response = await client.post(
            f"{self.url}/v1/tunnels/demo/query",
            json={"sql": "SELECT 1 AS n"},
            headers={"Authorization": f"Bearer {token}"},
        )
        last = response.text.strip().splitlines()[-1] if response.text.strip() else ""
        return response.status_code, last


async def _start_relay(config: Path, log: Path, nursery: trio.Nursery) -> _Relay:
    out = log.with_suffix(".out")
    with out.open("wb") as stdout, log.open("wb") as stderr:
        process = await nursery.start(
            partial(trio.run_process, [*PYTHON, "relay", "serve", "--config", str(config)],
                    stdout=stdout, stderr=stderr, check=False)
        )  # fmt: skip

    async def listening() -> bool:
        assert process.poll() is None, await trio.Path(log).read_text()
        return "\n" in await trio.Path(out).read_text()

    await eventually(listening)
    first = await trio.Path(out).read_text()
    url = first.split("\n", 1)[0].removeprefix("relay listening on ").strip()
    return _Relay(process, url, log)


async def _until(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float = 20) -> None:
    with trio.move_on_after(timeout_s):
        await eventually(check)
        return
    raise AssertionError(f"not within {timeout_s} s: {what}")


async def test_live_rotation_of_both_keys_by_sighup_fails_no_query(tmp_path: Path) -> None:
    async with open_stack(tmp_path, relay=False) as stack:
        keys_dir = tmp_path / "rotation-keys"
        relay_old = generate_key_files(keys_dir, "relay-old")
        relay_new = generate_key_files(keys_dir, "relay-new")
        conn_old = stack.key  # conn-1's first key
        conn_new = generate_key_files(keys_dir, "conn-1-new")
        relay_toml = tmp_path / "relay.toml"
        write = partial(write_relay_toml, relay_toml, issuer=stack.idp.issuer)
        write(relay_key=relay_old, connector_keys=[conn_old.public_key])
        token = stack.token()
        failures: list[tuple[int, str]] = []
        ok = 0
        async with trio.open_nursery() as nursery:
            relay = await _start_relay(relay_toml, tmp_path / "relay.log", nursery)
            connector_config = partial(
                write_stack_config,
                stack,
                "rotating",
                relay_urls=[relay.url.replace("http://", "ws://")],
                relay_public_keys=[relay_old.public_key, relay_new.public_key],
                ha_connections=2,
            )
            connector_toml = connector_config(private_key_file=conn_old.private_path)
            connector_log = tmp_path / "connector.log"
            with connector_log.open("wb") as stderr:
                connector = await nursery.start(
                    partial(trio.run_process, [*PYTHON, "connector", "run", "--config",
                            str(connector_toml)], stderr=stderr, check=False)
                )  # fmt: skip

            async def two_sessions() -> bool:
                return len(await relay.sessions()) == 2

            await _until("the connector's two connections are up", two_sessions)
            stop, stopped = trio.Event(), trio.Event()

            async def traffic() -> None:
                nonlocal ok
                async with httpx.AsyncClient(timeout=10) as client:
                    while not stop.is_set():
                        status, last = await relay.query(client, token)
                        if status == 200 and '"done"' in last:
                            ok += 1
                        else:
                            failures.append((status, last))
                        await trio.sleep(0.01)
                stopped.set()

            nursery.start_soon(traffic)
            first = await relay.sessions()

            # 0. a broken config on SIGHUP is refused; the running one is kept
            relay_toml.write_text("[relay\n")
            relay.process.send_signal(signal.SIGHUP)
            await _until("relay.reload_failed is logged", _logged(relay.log, "relay.reload_failed"))
            assert await relay.sessions() == first

            # 1. the relay key: new connections get HELLOs signed by the new key, the two live
            #    sessions stay (their attestations keep the key their HELLO was signed with)
            write(relay_key=relay_new, connector_keys=[conn_old.public_key])
            relay.process.send_signal(signal.SIGHUP)

            async def relay_key_is_new() -> bool:
                return bool((await relay.stats())["relay_key_id"] == relay_new.key_id)

            await _until("the relay signs with the new key", relay_key_is_new)
            served_before = ok
            await _until("queries flow", _more_than(lambda: ok, served_before + 20))
            assert await relay.sessions() == first

            # 2. the connector key: both registered at the relay (nothing drained), then the
            #    connector switches and replaces its connections, make before break
            write(relay_key=relay_new, connector_keys=[conn_new.public_key, conn_old.public_key])
            relay.process.send_signal(signal.SIGHUP)
            await _until(
                "the relay took both connector keys", _logged(relay.log, '"connector_keys": 2')
            )
            assert await relay.sessions() == first
            connector_config(private_key_file=conn_new.private_path)
            connector.send_signal(signal.SIGHUP)

            async def replaced() -> bool:
                now = await relay.sessions(serving_only=False)
                return len(now) == 2 and not now & first

            await _until("both connections replaced with the new key", replaced)
            second = await relay.sessions()
            served_before = ok
            await _until("queries flow", _more_than(lambda: ok, served_before + 20))

            # 3. the old connector key goes: nothing to drain, the sessions stay
            write(relay_key=relay_new, connector_keys=[conn_new.public_key])
            relay.process.send_signal(signal.SIGHUP)
            await _until("the relay dropped the old key", _logged(relay.log, '"connector_keys": 1'))
            served_before = ok
            await _until("queries flow", _more_than(lambda: ok, served_before + 20))
            assert await relay.sessions() == second
            stop.set()
            await stopped.wait()  # its last query answered

            # the old connector key is refused now, and the old relay key no longer signs
            stale = load_config(connector_config(private_key_file=conn_old.private_path))
            async with open_connector(stale) as stale_connector:
                await trio.sleep(1.0)
                assert stale_connector.ready_links == 0
            connector.send_signal(signal.SIGTERM)
            relay.process.send_signal(signal.SIGTERM)
        relay_text = relay.log.read_text()
        connector_text = connector_log.read_text()
    assert failures == [], f"{len(failures)} of {ok + len(failures)} queries failed: {failures[:5]}"
    assert ok > 60
    assert "relay.reloaded" in relay_text
    assert "connector.key_unregistered" not in relay_text  # the order above drains nothing
    assert "auth.invalid_token" in relay_text  # the stale key's dial was refused
    assert "connector key and relay pins reloaded" in connector_text
    for secret in (conn_old, conn_new, relay_old, relay_new):
        assert secret.private_path.read_text().split("\n")[1] not in relay_text + connector_text


def _logged(log: Path, needle: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return needle in await trio.Path(log).read_text()

    return check


def _more_than(count: Callable[[], int], target: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return count() > target

    return check


# -- the same, in process: what survives a reload and what it cuts off ----------------------------


async def test_a_reload_keeps_live_sessions_and_drains_a_revoked_connector_key(
    tmp_path: Path,
) -> None:
    relay_old, relay_new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    async with _stack_with_app(tmp_path, relay_old) as (stack, running):
        pins_old_only = write_stack_config(stack, "old-pin")  # pins the old relay key only
        with trio.fail_after(60):
            async with open_connector(load_config(pins_old_only)) as connector:
                await connector.wait_ready()
                app = running.app
                await _relay_serves(app, 1)
                summary = app.reload(dataclasses.replace(app.config, private_key=relay_new))
                # the live session keeps the relay key its HELLO was signed with, so a
                # connector that pinned only that key still accepts its attestations
                assert await _query_ok(stack)
                assert summary["drained"] == 0
                assert summary["kept"] == 1
                assert summary["relay_key_id"] == key_id(relay_new)
                # ... while a new connection gets the new key, which that connector refuses
                async with open_connector(load_config(pins_old_only)) as late:
                    await trio.sleep(1.0)
                    assert late.ready_links == 0
                # revoking the connector's key drains its session: no query reaches it
                other = Ed25519PrivateKey.generate().public_key()
                tunnels = {"demo": TunnelConfig(name="demo", connectors={"conn-1": (other,)})}
                summary = app.reload(dataclasses.replace(app.config, tunnels=tunnels))
                assert summary["drained"] == 1
                status, lines = await post_query(stack, sql="SELECT 1 AS n")
                await trio.sleep(1.0)  # the connector redials with the revoked key meanwhile
                serving = app.registry.get("demo").status()
    assert status == 503
    assert lines[-1]["error"]["code"] in {"connector.draining", "tunnel.no_connector"}
    assert serving["connections"] - serving["draining"] == 0
    assert app.counters.snapshot()["refused"].get("auth.invalid_token", 0) >= 1


async def test_a_connector_that_ignores_the_drain_of_its_revoked_key_is_closed_by_the_relay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a hostile connector keeps its drained socket open; the relay closes it once in-flight
    # queries had their time (query_timeout_ms + deadline_grace_ms: 1.5 s here)
    key = Ed25519PrivateKey.generate()
    fast = {**TEST_LIMITS, "query_timeout_ms": 1000, "deadline_grace_ms": 500}
    async with open_python_relay(
        tunnel="demo",
        connector_ids=["conn-1"],
        issuer="http://127.0.0.1:9/unused",
        connector_keys={"conn-1": key},
        limits={**fast, "ping_interval_s": 0.2},
    ) as (handle, running):
        app = running.app
        with trio.fail_after(30):
            async with open_peer(
                handle.ws_url, "demo", "conn-1", key, handle.relay_public_key
            ) as peer:
                await _relay_serves(app, 1)
                other = Ed25519PrivateKey.generate().public_key()
                tunnels = {"demo": TunnelConfig(name="demo", connectors={"conn-1": (other,)})}
                revoked_at = trio.current_time()
                summary = app.reload(dataclasses.replace(app.config, tunnels=tunnels))
                await peer.closed.wait()
                closed_after_s = trio.current_time() - revoked_at
                received = [type(e).__name__ for e in peer.conn.events()]
    assert summary["drained"] == 1
    assert 1.5 <= closed_after_s < 5
    assert "connector.drain_expired" in caplog.text
    assert received == [] or "GoAway" in received


async def test_unpinning_a_relay_key_replaces_its_connections_without_a_failed_query(
    tmp_path: Path,
) -> None:
    relay_old, relay_new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    pins = [encode_public_key(relay_old), encode_public_key(relay_new)]
    async with _stack_with_app(tmp_path, relay_old) as (stack, running):
        both = write_stack_config(stack, "both", relay_public_keys=pins, ha_connections=2)
        new_only = write_stack_config(stack, "new", relay_public_keys=pins[1:])
        results: list[bool] = []
        failures: list[object] = []
        with trio.fail_after(60):
            async with open_connector(load_config(both)) as connector:
                await connector.wait_ready(2)
                app = running.app
                await _relay_serves(app, 2)
                app.reload(dataclasses.replace(app.config, private_key=relay_new))
                before = {link.relay_key_id for link in connector._links}
                stop = trio.Event()

                async def traffic() -> None:
                    while not stop.is_set():
                        results.append(await _query_ok(stack, failures))
                        await trio.sleep(0.01)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(traffic)
                    await eventually(lambda: len(results) >= 3, interval=0.02)
                    summary = connector.reload_keys(load_config(new_only))
                    at_reload = len(results)
                    new_key = {key_id(relay_new)}
                    await eventually(
                        lambda: (
                            {link.relay_key_id for link in connector._links} == new_key
                            and connector.ready_links >= 2
                        )
                    )
                    await trio.sleep(1.0)  # and the new connections serve
                    stop.set()
    assert before == {key_id(relay_old)}
    assert summary["replaced_connections"] == 2
    assert summary["key_changed"] is False
    assert at_reload >= 3
    assert len(results) - at_reload >= 5  # traffic ran through the replacement
    assert all(results), f"{results.count(False)} of {len(results)} failed: {failures}"


@asynccontextmanager
async def _stack_with_app(
    tmp_path: Path, relay_key: Ed25519PrivateKey, **limits: Any
) -> AsyncIterator[tuple[Stack, RunningRelay]]:
    """A stack whose relay runs in this process with ``relay_key`` (its app is reloadable);
    ``limits`` are [limits] keys on top of the test defaults."""
    async with open_stack(tmp_path, relay=False) as stack:
        async with open_python_relay(
            tunnel="demo",
            connector_ids=["conn-1"],
            issuer=stack.idp.issuer,
            connector_keys={"conn-1": load_private_key(stack.key.private_path)},
            relay_key=relay_key,
            limits={**TEST_LIMITS, **limits},
        ) as (handle, running):
            stack.relay = handle
            yield stack, running


async def test_a_reload_that_removes_a_tunnel_drains_its_connections(tmp_path: Path) -> None:
    async with _stack_with_app(tmp_path, Ed25519PrivateKey.generate()) as (stack, running):
        with trio.fail_after(60):
            async with open_connector(load_config(write_stack_config(stack, "only"))) as connector:
                await connector.wait_ready()
                app = running.app
                await _relay_serves(app, 1)
                demo = app.registry.get("demo")
                other = TunnelConfig(name="other", connectors=demo.config.connectors)
                summary = app.reload(dataclasses.replace(app.config, tunnels={"other": other}))
                status, lines = await post_query(stack, sql="SELECT 1 AS n")
    assert summary["drained"] == 1
    assert demo.removed
    assert all(s.draining or s.closed for s in demo.sessions)
    assert status == 404
    assert lines[-1]["error"]["code"] == "tunnel.unknown"
    assert list(app.registry.tunnels) == ["other"]


async def _relay_serves(app: Any, connections: int) -> None:
    """Wait until the relay has registered ``connections`` (READY is processed there a bit after
    the connector sent it)."""
    tunnel = app.registry.get("demo")
    while tunnel.status()["connections"] < connections:
        await tunnel.wait_changed()
