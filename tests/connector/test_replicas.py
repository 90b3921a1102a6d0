"""One connector run as several processes on one host (one per core): replicas of one connector id.

``edgetds connector run --replica N`` (what examples/systemd/edgetds-connector@.service starts)
runs replica N of a connector with the shared config: same connector id and key, its own audit
file and [ops] port. Tested with two real `edgetds connector run` processes, the real Python
relay, tdslite and dev IdP tokens: both replicas register under the one connector id, the relay
spreads queries over them and each answers its share (its own audit chain records them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connector.config import for_replica, load_config
from identity.keys import encode_public_key, generate_key_files
from tests.support.connector_stack import write_connector_config
from tests.support.ops_stack import Stack, open_stack, post_query
from tests.support.processes import stop_processes
from tests.support.waiting import eventually

EDGETDS = [sys.executable, "-m", "edgetds"]
SQL = {"sql": "SELECT 1 AS n"}


def test_a_replica_has_its_own_audit_file_and_ops_port(tmp_path: Path) -> None:
    path = write_connector_config(
        tmp_path,
        relay_urls=["ws://127.0.0.1:9"],
        relay_public_keys=[encode_public_key(Ed25519PrivateKey.generate())],
        private_key_file=generate_key_files(tmp_path / "keys", "conn-1").private_path,
        issuer="https://idp.invalid",
        db_host="127.0.0.1",
        db_port=9,
    )
    path.write_text(path.read_text() + '\n[ops]\nlisten = "127.0.0.1:9464"\n')
    config = load_config(path)
    first, second = for_replica(config, 1), for_replica(config, 2)
    assert first.audit_file == tmp_path / "audit-1.jsonl"
    assert second.audit_file == tmp_path / "audit-2.jsonl"
    assert (first.ops_listen, second.ops_listen) == ("127.0.0.1:9464", "127.0.0.1:9465")
    assert first.tunnel == second.tunnel == config.tunnel  # same connector id, key, relays
    with pytest.raises(ValueError, match="1..64"):
        for_replica(config, 0)


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def _connections(stack: Stack) -> dict[str, object]:
    assert stack.relay is not None
    url = f"{stack.relay.http_url}/v1/tunnels/{stack.relay.tunnel}/status"
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url, headers={"authorization": f"Bearer {stack.token()}"})
    status: dict[str, object] = response.json()
    return status


async def test_two_replicas_of_one_connector_share_the_queries(tmp_path: Path) -> None:
    queries = 24
    async with open_stack(tmp_path, ha_connections=1) as stack, trio.open_nursery() as nursery:
        logs = [(tmp_path / f"replica-{n}.log").open("wb") for n in (1, 2)]
        processes = []
        for n, log in zip((1, 2), logs, strict=True):
            cmd = [*EDGETDS, "connector", "run", "--config", str(stack.config_path)]
            run = partial(trio.run_process, [*cmd, "--replica", str(n)], check=False)
            processes.append(
                await nursery.start(partial(run, stdout=subprocess.DEVNULL, stderr=log))
            )
        try:
            with trio.fail_after(60):

                async def both_registered() -> bool:
                    return (await _connections(stack)).get("connections") == 2

                await eventually(both_registered)
                status = await _connections(stack)
                answers = [await post_query(stack, sql=SQL["sql"]) for _ in range(queries)]
        finally:
            await stop_processes(processes, logs)
    assert status["connector_ids"] == ["conn-1"]  # one connector id, two connections
    assert all(code == 200 and "done" in lines[-1] for code, lines in answers), answers
    directory = stack.config_path.parent
    served = [
        sum(1 for r in _records(directory / f"audit-{n}.jsonl") if r["statement"] == SQL)
        for n in (1, 2)
    ]
    assert not (directory / "audit.jsonl").exists()  # replicas write only their own files
    assert sum(served) == queries, served
    # one query at a time: the relay's tie-break alternates between the two connections
    assert min(served) >= queries // 3, served
