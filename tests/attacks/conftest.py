"""Fixtures for the attack tests: the chaos stack (dev IdP, tdslite, connectors as processes),
both relays as real processes, and a log file of this process's own log lines (rogue peers,
clients) so the final log-hygiene test (tests/chaos/test_zz_log_hygiene.py) greps them too."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.chaos.conftest import TUNNEL, Chaos, RelayProcess, chaos  # noqa: F401 - shared fixture
from tests.support.chaos import HYGIENE, read_log
from tests.support.relays import RelayHandle
from tests.support.worker_relay import open_worker_relay, workerd_log

RELAY_KINDS = ("python", "worker")


@pytest.fixture(autouse=True)
def relay_log(tmp_path: Path) -> Iterator[Path]:
    """Every log line of this process (the in-process relay, hypercorn) at INFO, to a file."""
    path = tmp_path / "in-process.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    HYGIENE.file(path)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


@asynccontextmanager
async def open_relay(
    kind: str, stack: Chaos, connector_ids: tuple[str, ...] = ("conn-1", "conn-2")
) -> AsyncIterator[RelayHandle]:
    """The Python relay (`edgetds relay serve`, a process) or the relay Worker (workerd),
    registered with `stack`. Either process must still be alive when the block ends."""
    if kind == "python":
        relay = RelayProcess(stack.workdir, issuer=stack.idp.issuer, connector_ids=connector_ids)
        stack.use_relay(relay.handle)
        async with relay.running() as process:
            yield relay.handle
            assert process.returncode is None, f"the relay died:\n{read_log(relay.log)[-2000:]}"
        return
    async with open_worker_relay(
        tunnel=TUNNEL, connector_ids=list(connector_ids), issuer=stack.idp.issuer
    ) as worker:
        stack.use_relay(worker.handle)
        try:
            yield worker.handle
            assert worker.process.returncode is None, f"workerd died:\n{workerd_log(worker)}"
        finally:
            log = stack.workdir / "workerd.log"
            await trio.to_thread.run_sync(log.write_text, workerd_log(worker))
            HYGIENE.file(log)


@pytest.fixture(params=RELAY_KINDS)
def relay_kind(request: pytest.FixtureRequest) -> Any:
    return request.param


__all__ = ["RELAY_KINDS", "open_relay"]
