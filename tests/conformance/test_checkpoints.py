"""Audit checkpoints per audit file at both relays (SPEC.md 5.2, 11.3): replicas of one connector
id write one audit file each, and the relay keeps a checkpoint per (tunnel, connector id, file).

A peer speaking edgetds/1 as the registered connector "conn-2" (its real key) sends signed
CHECKPOINT frames of two files; the answers of `GET .../audit/checkpoint?connector=conn-2[&file=]`
are asserted whole, so the Python relay and the Worker give the same ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from protocol import CHECKPOINT_CAP, events, sign_checkpoint
from tests.support.conformance import RELAYS, Conformance, open_conformance
from tests.support.protocol_peer import open_peer
from tests.support.waiting import eventually

AUDIT_TOKEN = "audit-reader-secret"
AUTH = {"authorization": f"Bearer {AUDIT_TOKEN}"}


@pytest.fixture(params=sorted(RELAYS))
async def ckpt_conf(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Conformance]:
    digest = hashlib.sha256(AUDIT_TOKEN.encode()).hexdigest()
    with trio.CancelScope(deadline=trio.current_time() + 60) as scope:  # setup deadline
        async with open_conformance(
            request.param, tmp_path, audit_token_sha256=digest
        ) as conformance:
            scope.deadline = trio.current_time() + 300  # the test sets its own; bounds teardown
            yield conformance
    if scope.cancelled_caught:
        raise trio.TooSlowError(f"the {request.param} checkpoint stack did not start or stop")


async def answer(conf: Conformance, file: str | None = None) -> httpx.Response:
    query = {"connector": "conn-2"} | ({} if file is None else {"file": file})
    url = f"{conf.relay.http_url}/v1/tunnels/demo/audit/checkpoint"
    response: httpx.Response = await conf.http.get(url, params=query, headers=AUTH)
    return response


def held(response: httpx.Response) -> dict[str, Any]:
    """A 200 answer without its received_at (the relay's clock)."""
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body.pop("received_at"), int | None)
    return body


def expected(checkpoint: dict[str, Any] | None, conflict: dict[str, Any] | None = None) -> Any:
    return {
        "tunnel": "demo",
        "connector_id": "conn-2",
        "checkpoint": checkpoint,
        "conflict": conflict,
    }


def checkpoint(conf: Conformance, seq: int, file: str) -> dict[str, Any]:
    """conn-2's checkpoint of `file` at `seq`, signed with its registered key."""
    fields = {"connector_id": "conn-2", "tunnel": "demo", "file": file}
    key = conf.relay.connector_keys["conn-2"]
    return sign_checkpoint(key, seq=seq, head=f"{seq:064x}", now=1, **fields)


async def holds(conf: Conformance, file: str, seq: int) -> bool:
    """The relay holds conn-2's checkpoint of `file` at `seq`."""
    body = (await answer(conf, file)).json()
    return body["checkpoint"] is not None and body["checkpoint"]["seq"] == seq


async def test_checkpoints_are_kept_per_audit_file(ckpt_conf: Conformance) -> None:
    conf = ckpt_conf
    key = conf.relay.connector_keys["conn-2"]

    first, second = "audit-1.jsonl", "audit-2.jsonl"
    peer_args = (conf.relay.ws_url, "demo", "conn-2", key, conf.relay.relay_public_key)
    with trio.fail_after(60):
        # none held: null, with or without a file named
        assert held(await answer(conf)) == expected(None)
        assert held(await answer(conf, first)) == expected(None)
        async with open_peer(*peer_args, caps=(CHECKPOINT_CAP,)) as peer:
            await peer.send(events.Checkpoint(checkpoint(conf, 5, first)))
            await eventually(lambda: holds(conf, first, 5))
            # one file: without &file= the same answer as with it (as before files were kept)
            assert (
                held(await answer(conf))
                == held(await answer(conf, first))
                == expected(checkpoint(conf, 5, first))
            )
            assert held(await answer(conf, second)) == expected(None)
            # the other replica's file: a lower seq, but no regression of the first file's
            await peer.send(events.Checkpoint(checkpoint(conf, 2, second)))
            await peer.send(events.Checkpoint(checkpoint(conf, 6, first)))
            await eventually(lambda: holds(conf, first, 6))  # frames are handled in order
            assert held(await answer(conf, first)) == expected(checkpoint(conf, 6, first))
            assert held(await answer(conf, second)) == expected(checkpoint(conf, 2, second))
            # several files and none named: 409 with their names
            several = await answer(conf)
            assert several.status_code == 409, several.text
            assert several.json() == {
                "error": {
                    "code": "request.invalid",
                    "message": "connector conn-2 has checkpoints of 2 audit files (audit-1.jsonl, "
                    "audit-2.jsonl): name the one to verify with &file=<audit file name>",
                },
                "files": [first, second],
            }
            # a regression within one file is refused and its checkpoint kept as the conflict
            await peer.send(events.Checkpoint(checkpoint(conf, 1, second)))
            await peer.send(events.Checkpoint(checkpoint(conf, 7, first)))
            await eventually(lambda: holds(conf, first, 7))
            assert held(await answer(conf, second)) == expected(
                checkpoint(conf, 2, second), conflict=checkpoint(conf, 2, second)
            )
            assert held(await answer(conf, first)) == expected(checkpoint(conf, 7, first))
            assert held(await answer(conf, "audit-3.jsonl")) == expected(None)


async def test_checkpoints_of_at_most_64_files_are_kept(ckpt_conf: Conformance) -> None:
    """A connector key can make a relay keep checkpoints of 64 audit files (SPEC.md 5.2): a
    65th file's is not kept, while the 64 files' checkpoints still advance."""
    conf = ckpt_conf
    key = conf.relay.connector_keys["conn-2"]

    files = [f"audit-{n}.jsonl" for n in range(65)]
    peer_args = (conf.relay.ws_url, "demo", "conn-2", key, conf.relay.relay_public_key)
    with trio.fail_after(120):
        async with open_peer(*peer_args, caps=(CHECKPOINT_CAP,)) as peer:
            for file in files:
                await peer.send(events.Checkpoint(checkpoint(conf, 1, file)))
            await peer.send(events.Checkpoint(checkpoint(conf, 2, files[0])))
            await eventually(lambda: holds(conf, files[0], 2))  # frames are handled in order
            assert held(await answer(conf, files[-1])) == expected(None)
            assert held(await answer(conf, files[63])) == expected(checkpoint(conf, 1, files[63]))
            several = await answer(conf)
            assert several.status_code == 409, several.text
            assert several.json()["files"] == sorted(files[:64])
