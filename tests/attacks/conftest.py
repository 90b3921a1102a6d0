"""Fixtures for the attack tests: the chaos stack (dev IdP, tdslite, connectors as processes),
both relays, and a log file capturing the in-process Python relay's log lines so the final
log-hygiene test (tests/chaos/test_zz_log_hygiene.py) can grep them for secrets."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.chaos.conftest import TUNNEL, Chaos, chaos  # noqa: F401 - the fixture is shared
from tests.support.chaos import HYGIENE
from tests.support.relays import RelayHandle, start_python_relay
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
    """The Python relay (in process) or the relay Worker (workerd), registered with `stack`."""
    if kind == "python":
        async with start_python_relay(
            tunnel=TUNNEL, connector_ids=list(connector_ids), issuer=stack.idp.issuer
        ) as relay:
            stack.use_relay(relay)
            yield relay
        return
    async with open_worker_relay(
        tunnel=TUNNEL, connector_ids=list(connector_ids), issuer=stack.idp.issuer
    ) as worker:
        stack.use_relay(worker.handle)
        try:
            yield worker.handle
        finally:
            log = stack.workdir / "workerd.log"
            await trio.to_thread.run_sync(log.write_text, workerd_log(worker))
            HYGIENE.file(log)


OpenRelay = Callable[..., AbstractAsyncContextManager[RelayHandle]]


@pytest.fixture(params=RELAY_KINDS)
def relay_kind(request: pytest.FixtureRequest) -> Any:
    return request.param


__all__ = ["RELAY_KINDS", "open_relay"]
