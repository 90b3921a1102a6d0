"""Key rotation as the README documents it, with real relays, connectors, tdslite and tokens.

- Relay key: the connector pins the old AND the new relay key; the relay restarts on the same URL
  with the new key; the connector reconnects by itself and serves again. A connector that pinned
  only the old key refuses the new relay (nothing is served to a relay it cannot verify).
- Connector key: the relay lists the old and the new key under two connector ids; the new
  connector comes up next to the old one, the old one drains away, and a steady stream of client
  queries sees no failure during the switch.
"""

from __future__ import annotations

import socket
from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connector.config import load_config
from connector.keys import encode_public_key
from connector.runtime import open_connector
from tests.support.ops_stack import Stack, open_stack, post_query, write_stack_config


async def _query_ok(stack: Stack, failures: list[object] | None = None) -> bool:
    status, lines = await post_query(stack, sql="SELECT 1 AS n")
    ok = status == 200 and "done" in lines[-1]
    if not ok and failures is not None:
        failures.append((status, lines[-1] if lines else None))
    return ok


async def test_relay_key_rotation_with_both_keys_pinned(tmp_path: Path) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    pins = [encode_public_key(old), encode_public_key(new)]
    port = _free_port()
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
