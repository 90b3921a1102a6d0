"""Signed audit checkpoints end to end on the Python relay: a real `edgetds connector run`
process, the relay, tdslite and dev-IdP tokens. The END of the audit log is cut off and
`edgetds audit verify --checkpoint URL` says so; SIGHUP rotates the file and the chain goes on."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from connector.audit import rotated_files
from identity.keys import load_private_key
from tests.support.ops_stack import open_stack, post_query, write_stack_config
from tests.support.relays import start_python_relay
from tests.support.waiting import eventually

PYTHON = [sys.executable, "-m", "edgetds"]
AUDIT_TOKEN = "audit-reader-secret"


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float = 30) -> None:
    """Poll state owned by another process until ``check`` holds."""
    with trio.move_on_after(timeout_s):
        await eventually(check)
        return
    raise AssertionError(f"timed out waiting until {what}")


async def verify(*args: str, token: str | None = AUDIT_TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGETDS_AUDIT_TOKEN"}
    if token is not None:
        env["EDGETDS_AUDIT_TOKEN"] = token
    result = await trio.run_process(
        [*PYTHON, "audit", "verify", *args], capture_stdout=True, capture_stderr=True, check=False,
        env=env,
    )  # fmt: skip
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


async def test_truncation_after_the_last_checkpoint_and_sighup_rotation(tmp_path: Path) -> None:
    async with open_stack(tmp_path, relay=False) as stack:
        key = load_private_key(stack.key.private_path)
        async with start_python_relay(
            tunnel="demo",
            connector_ids=["conn-1"],
            issuer=stack.idp.issuer,
            connector_keys={"conn-1": key},
            audit_token_sha256=hashlib.sha256(AUDIT_TOKEN.encode()).hexdigest(),
        ) as relay:
            stack.relay = relay
            config = write_stack_config(stack, audit_options={"checkpoint_every_records": 1})
            audit_file = config.parent / "audit.jsonl"
            url = f"{relay.http_url}/v1/tunnels/demo/audit/checkpoint?connector=conn-1"
            headers = {"authorization": f"Bearer {AUDIT_TOKEN}"}
            http = httpx.AsyncClient(timeout=10)

            async def relay_checkpoint() -> dict[str, Any] | None:
                response = await http.get(url, headers=headers)
                assert response.status_code == 200, response.text
                checkpoint: dict[str, Any] | None = response.json()["checkpoint"]
                return checkpoint

            async def checkpoint_at(seq: int) -> bool:
                held = await relay_checkpoint()
                return held is not None and held["seq"] == seq

            async def ready() -> bool:
                status, _ = await post_query(stack, sql="SELECT 1 AS n")
                return status == 200

            log = (tmp_path / "connector.log").open("wb")
            async with http, trio.open_nursery() as nursery:
                connector = await nursery.start(
                    partial(trio.run_process, [*PYTHON, "connector", "run", "--config",
                            str(config)], stderr=log, check=False)
                )  # fmt: skip
                await until("the connector serves", ready)  # record 1
                for n in (2, 3):
                    status, lines = await post_query(stack, sql=f"SELECT {n} AS n")
                    assert status == 200, lines
                    assert "done" in lines[-1], lines
                await until("the relay holds the checkpoint of record 3", partial(checkpoint_at, 3))

                # SIGHUP rotates: audit.jsonl -> audit.jsonl.000000000003, the chain continues
                connector.send_signal(signal.SIGHUP)

                async def rotated() -> bool:
                    return [p.name for p in rotated_files(audit_file)] == [
                        "audit.jsonl.000000000003"
                    ]

                await until("SIGHUP rotated the audit file", rotated)
                for n in (4, 5):
                    status, lines = await post_query(stack, sql=f"SELECT {n} AS n")
                    assert status == 200, lines
                await until("the relay holds the checkpoint of record 5", partial(checkpoint_at, 5))
                first = json.loads(audit_file.read_text().splitlines()[0])
                assert first["seq"] == 4  # the new file's first record chains from the old file
                files = [str(p) for p in [*rotated_files(audit_file), audit_file]]
                public_key = stack.key.public_path.read_text().strip()

                intact = await verify(*files, "--checkpoint", url, "--public-key", public_key)
                assert intact.returncode == 0, intact.stderr
                assert "checkpoint: matches record 5" in intact.stdout

                # cut the last record off the end: the chain alone still verifies ...
                lines = audit_file.read_text().splitlines(keepends=True)
                audit_file.write_text("".join(lines[:-1]))
                chain_only = await verify(*files)
                assert chain_only.returncode == 0, chain_only.stderr
                assert "chain intact" in chain_only.stdout
                # ... but not against the relay's signed checkpoint
                cut = await verify(*files, "--checkpoint", url, "--config", str(config))
                assert cut.returncode == 3, (cut.stdout, cut.stderr)
                assert "truncated: the file ends at record 4 but the relay's checkpoint covers " \
                    "record 5" in cut.stderr  # fmt: skip
                # only the newest file given: the checkpoint's record is beyond it, too
                assert (await verify(str(audit_file), "--prev", first["prev"], "--checkpoint",
                                     url, "--public-key", public_key)).returncode == 3  # fmt: skip

                # no audit token, a wrong one, or a checkpoint under another key: exit 4
                assert (await verify(*files, "--checkpoint", url, "--public-key", public_key,
                                     token=None)).returncode == 4  # fmt: skip
                wrong = await verify(*files, "--checkpoint", url, "--public-key", public_key,
                                     token="wrong")  # fmt: skip
                assert wrong.returncode == 4
                assert "401 auth.invalid_token" in wrong.stderr
                other = relay.relay_public_key  # a valid key, but not the connector's
                bad_key = await verify(*files, "--checkpoint", url, "--public-key", other)
                assert bad_key.returncode == 4
                assert "does not verify" in bad_key.stderr

                connector.send_signal(signal.SIGTERM)
            log.close()
