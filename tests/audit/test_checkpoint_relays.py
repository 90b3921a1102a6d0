"""Audit checkpoints at both relays (the Python relay and the Worker under workerd), with a real
connector, tdslite and dev-IdP tokens: the endpoint's authentication, a signed checkpoint that
`edgetds audit verify --checkpoint URL` holds a truncated log against, and a connector restarted
on a truncated log whose lower checkpoint is refused and kept as a conflict, and two replicas of
one connector id (`connector run --replica N`) each with its own audit file and checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connector.config import load_config
from connector.runtime import open_connector
from edgetds.devidp import DevIdP, open_dev_idp
from protocol import (
    CHECKPOINT_CAP,
    Frame,
    FrameType,
    canonical_json,
    encode_frame,
    events,
    sign_checkpoint,
    verify_checkpoint,
)
from tdslite import TdsServer, open_server
from tests.support.e2e_stack import TDSLITE_USERS, Base
from tests.support.processes import stop_processes
from tests.support.protocol_peer import open_peer
from tests.support.relays import RelayHandle, start_python_relay
from tests.support.waiting import eventually
from tests.support.worker_relay import start_worker_relay

RELAYS = {"python": start_python_relay, "worker": start_worker_relay}
AUDIT_TOKEN = "audit-reader-secret"
AUTH = {"authorization": f"Bearer {AUDIT_TOKEN}"}


@dataclass
class Setup:
    idp: DevIdP
    db: TdsServer
    relay: RelayHandle
    http: httpx.AsyncClient
    directory: Path

    @property
    def url(self) -> str:
        return f"{self.relay.http_url}/v1/tunnels/demo/audit/checkpoint?connector=conn-1"

    def config(self) -> Path:
        return Base(self.idp, self.db, self.relay, self.directory).write_config(
            ha_connections=1,
            audit_options={"checkpoint_every_records": 1, "checkpoint_interval_s": 3600},
        )

    async def held(self, file: str | None = None) -> dict[str, Any]:
        url = self.url if file is None else f"{self.url}&file={file}"
        response = await self.http.get(url, headers=AUTH)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def held_of(self, file: str) -> int | None:
        """The seq of the relay's checkpoint of conn-1's audit file ``file`` (None: none)."""
        checkpoint = (await self.held(file))["checkpoint"]
        return None if checkpoint is None else int(checkpoint["seq"])

    async def holds(self, seq: int) -> bool:
        """Whether the relay's checkpoint for conn-1 is the one of record ``seq``."""
        checkpoint = (await self.held())["checkpoint"]
        return checkpoint is not None and checkpoint["seq"] == seq

    async def query(self, n: int) -> None:
        token = self.idp.mint(sub="alice", groups=["analysts"])
        response = await self.http.post(
            f"{self.relay.http_url}/v1/tunnels/demo/query",
            json={"sql": f"SELECT {n} AS n"},
            headers={"authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        assert '"done"' in response.text.splitlines()[-1]


@pytest.fixture(params=sorted(RELAYS))
async def setup(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Setup]:
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            idp = await stack.enter_async_context(open_dev_idp(key_dir=tmp_path / "idp"))
            db = await stack.enter_async_context(open_server(users=users, db=":memory:"))
            relay = await stack.enter_async_context(
                RELAYS[request.param](
                    tunnel="demo",
                    connector_ids=["conn-1"],
                    issuer=idp.issuer,
                    audit_token_sha256=hashlib.sha256(AUDIT_TOKEN.encode()).hexdigest(),
                )
            )
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=20))
            yield Setup(idp, db, relay, http, tmp_path)


async def until(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    """Wait until ``check`` holds of the relay's state (over HTTP); callers bound it."""
    await eventually(check)


async def verify(*args: str) -> subprocess.CompletedProcess[str]:
    result = await trio.run_process(
        [sys.executable, "-m", "edgetds", "audit", "verify", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={**os.environ, "EDGETDS_AUDIT_TOKEN": AUDIT_TOKEN},
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


async def test_the_checkpoint_endpoint_needs_the_audit_token(setup: Setup) -> None:
    base = f"{setup.relay.http_url}/v1/tunnels"
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": AUDIT_TOKEN}):
        refused = await setup.http.get(setup.url, headers=headers)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "auth.invalid_token"
    missing = await setup.http.get(f"{base}/demo/audit/checkpoint", headers=AUTH)
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "request.invalid"
    unknown = await setup.http.get(f"{base}/nope/audit/checkpoint?connector=conn-1", headers=AUTH)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "tunnel.unknown"
    assert await setup.held() == {
        "tunnel": "demo",
        "connector_id": "conn-1",
        "checkpoint": None,
        "received_at": None,
        "conflict": None,
    }


async def test_a_truncated_log_fails_against_the_checkpoint_and_a_regression_is_kept(
    setup: Setup,
) -> None:
    config = setup.config()
    audit_file = config.parent / "audit.jsonl"
    public_key = setup.relay.connector_keys["conn-1"].public_key()

    with trio.fail_after(90):
        async with open_connector(load_config(config)) as connector:
            await connector.wait_ready()
            for n in (1, 2, 3):
                await setup.query(n)
            await until("the relay holds the checkpoint of record 3", lambda: setup.holds(3))
        held = await setup.held()
        checkpoint = held["checkpoint"]
        verify_checkpoint(checkpoint, [public_key], connector_id="conn-1", tunnel="demo")
        last = json.loads(audit_file.read_text().splitlines()[-1])
        assert (checkpoint["seq"], checkpoint["head"]) == (3, last["hash"])
        assert checkpoint["file"] == "audit.jsonl"

        intact = await verify(str(audit_file), "--checkpoint", setup.url, "--config", str(config))
        assert intact.returncode == 0, intact.stderr
        # cut the last record off: the chain alone says "intact", the checkpoint does not
        lines = audit_file.read_text().splitlines(keepends=True)
        audit_file.write_text("".join(lines[:-1]))
        assert (await verify(str(audit_file))).returncode == 0
        cut = await verify(str(audit_file), "--checkpoint", setup.url, "--config", str(config))
        assert cut.returncode == 3, (cut.stdout, cut.stderr)
        assert (
            "truncated: the file ends at record 2 but the relay's checkpoint covers record 3 "
            f"(hash {last['hash']}" in cut.stderr
        )

        # restarted on the cut log, the connector checkpoints seq 2, then a new seq 3 and 4: the
        # relay refuses the first two (they go backwards) and keeps the old seq 3 as the conflict
        async with open_connector(load_config(config)) as connector:
            await connector.wait_ready()
            await setup.query(4)
            await setup.query(5)
            await until(
                "the relay holds the checkpoint of the new record 4", lambda: setup.holds(4)
            )
        held = await setup.held()
        assert held["conflict"] == checkpoint
        rewritten = await verify(
            str(audit_file), "--checkpoint", setup.url, "--config", str(config)
        )
        assert rewritten.returncode == 3, (rewritten.stdout, rewritten.stderr)
        assert "checkpoint: matches record 4" in rewritten.stdout
        assert f"record 3 has hash {json.loads(lines[2])['hash']}" not in rewritten.stderr
        assert "conflict (the connector once sent a checkpoint that went backwards): the head " \
            "does not match the checkpoint: record 3 has hash" in rewritten.stderr  # fmt: skip


async def test_a_checkpoint_on_connect_and_on_shutdown(setup: Setup) -> None:
    config = Base(setup.idp, setup.db, setup.relay, setup.directory).write_config(
        ha_connections=1,
        audit_options={"checkpoint_every_records": 100, "checkpoint_interval_s": 3600},
    )

    with trio.fail_after(60):
        async with open_connector(load_config(config)) as connector:
            await connector.wait_ready()
            await until("the connect-time checkpoint of the empty chain", lambda: setup.holds(0))
            await setup.query(1)
            await setup.query(2)
            # neither 100 records nor an hour: the relay still holds the connect-time checkpoint
            assert await setup.holds(0)
        # leaving the block drains the connector: its last word is the head after the last query
        await until("the shutdown checkpoint", lambda: setup.holds(2))


async def test_the_relay_stores_only_checkpoints_signed_by_the_connector(setup: Setup) -> None:
    relay = setup.relay
    key = relay.connector_keys["conn-1"]

    def checkpoint(seq: int, *, signer: Ed25519PrivateKey = key, **kw: Any) -> events.Checkpoint:
        fields = {"connector_id": "conn-1", "tunnel": "demo", "file": "audit.jsonl", **kw}
        return events.Checkpoint(
            sign_checkpoint(signer, seq=seq, head=f"{seq:064x}", now=1, **fields)
        )

    peer_args = (relay.ws_url, "demo", "conn-1", key, relay.relay_public_key)
    with trio.fail_after(30):
        async with open_peer(*peer_args, caps=(CHECKPOINT_CAP,)) as peer:
            await peer.send(checkpoint(7))
            await until("the relay stored seq 7", lambda: setup.holds(7))
            # not the connector's key, another connector's, another tunnel's: never stored (the
            # frames are handled in order, so once seq 8 is held the three were refused)
            await peer.send(checkpoint(9, signer=Ed25519PrivateKey.generate()))
            await peer.send(checkpoint(10, connector_id="conn-2"))
            await peer.send(checkpoint(11, tunnel="other"))
            await peer.send(checkpoint(8))
            await until("the relay stored seq 8", lambda: setup.holds(8))
            assert (await setup.held())["conflict"] is None
        # without the negotiated capability, a CHECKPOINT is a protocol error
        async with open_peer(*peer_args) as peer:
            payload = canonical_json(dict(checkpoint(12).fields))
            await peer.ws.send(encode_frame(Frame(FrameType.CHECKPOINT, 0, payload)))
            await peer.closed.wait()
        assert await setup.holds(8)


def _records(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def test_replicas_of_one_connector_each_get_their_own_checkpoint(setup: Setup) -> None:
    """Two real `edgetds connector run --replica N` processes of conn-1 write audit-1.jsonl and
    audit-2.jsonl: the relay keeps a checkpoint of each (no regression, no conflict), and `audit
    verify --checkpoint URL` of each replica's file checks it against that file's checkpoint."""
    config = setup.config()
    files = [config.parent / f"audit-{n}.jsonl" for n in (1, 2)]
    queries = 6

    async def checkpointed(expected: list[int]) -> bool:
        seqs = [await setup.held_of(path.name) for path in files]
        return seqs == expected and [_records(path) for path in files] == expected

    async with trio.open_nursery() as nursery:
        logs = [(setup.directory / f"replica-{n}.log").open("wb") for n in (1, 2)]
        processes = []
        for n, log in zip((1, 2), logs, strict=True):
            command = [sys.executable, "-m", "edgetds", "connector", "run", "--config"]
            run = partial(trio.run_process, [*command, str(config), "--replica", str(n)])
            started = partial(run, check=False, stdout=subprocess.DEVNULL, stderr=log)
            processes.append(await nursery.start(started))
        try:
            with trio.fail_after(90):
                # each replica checkpoints its empty chain when it connects
                await until("both replicas' first checkpoints", lambda: checkpointed([0, 0]))
                several = await setup.http.get(setup.url, headers=AUTH)
                assert several.status_code == 409, several.text
                assert several.json()["files"] == ["audit-1.jsonl", "audit-2.jsonl"]
                for n in range(queries):
                    await setup.query(n)

                async def all_checkpointed() -> bool:
                    counts = [_records(path) for path in files]
                    return sum(counts) == queries and await checkpointed(counts)

                await until("each file's checkpoint of its last record", all_checkpointed)
        finally:
            await stop_processes(processes, logs)
    counts = [_records(path) for path in files]
    assert min(counts) >= 1, counts  # both replicas answered queries
    for path in files:
        held = await setup.held(path.name)
        assert held["conflict"] is None  # no audit.checkpoint_regressed between the replicas
        last = json.loads(path.read_text().splitlines()[-1])
        assert (held["checkpoint"]["seq"], held["checkpoint"]["head"]) == (
            last["seq"],
            last["hash"],
        )
        # the URL names no file: audit verify asks for the verified file's checkpoint
        result = await verify(str(path), "--checkpoint", setup.url, "--config", str(config))
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert f"checkpoint: matches record {last['seq']}" in result.stdout
        assert f"file {path.name})" in result.stdout
    # a replica's log cut at its end still fails against its own checkpoint
    lines = files[0].read_text().splitlines(keepends=True)
    files[0].write_text("".join(lines[:-1]))
    cut = await verify(str(files[0]), "--checkpoint", setup.url, "--config", str(config))
    assert cut.returncode == 3, (cut.stdout, cut.stderr)
    assert f"the file ends at record {len(lines) - 1} but the relay's checkpoint" in cut.stderr
