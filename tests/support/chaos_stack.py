"""The chaos stack: dev IdP, a restartable tdslite (fixed port, file database, one statement log
across restarts), connectors as real `edgetds connector run` processes, and a relay chosen by
each test (in-process Python relay, `edgetds relay serve` as a process, or the Worker on workerd).

Each chaos test breaks one thing under load, heals it, then reports sent / ok / typed error /
lost / duplicated and the reconnect time (tests.support.chaos.record_result); the figures are
printed in pytest's terminal summary and written to tests/chaos/.results/.

The `chaos` fixture is shared by tests/chaos and tests/attacks (their conftests import it);
`open_relay` starts either relay as a real process registered with the stack.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgetds.devidp import DevIdP, open_dev_idp
from identity.oidc import default_verify_context
from tdslite import StatementLog, TdsServer, open_server
from tests.support.chaos import (
    HYGIENE,
    connections,
    edgetds,
    read_log,
    spawn,
    wait_connections,
    wait_for_line,
)
from tests.support.connector_stack import write_connector_config
from tests.support.e2e_stack import SETUP_SQL, TDSLITE_USERS, admin_batch, write_key
from tests.support.ports import reserved_port
from tests.support.relays import RelayHandle
from tests.support.waiting import eventually
from tests.support.worker_relay import open_worker_relay, workerd_log

TUNNEL = "demo"


class Database:
    """tdslite on a fixed port over a file database; `stop()`/`start()` restart it in place."""

    def __init__(self, workdir: Path, nursery: trio.Nursery) -> None:
        self.port = reserved_port()
        self.users = workdir / "users.toml"
        self.users.write_text(TDSLITE_USERS)
        self.file = workdir / "chaos.sqlite"
        self.log = StatementLog(workdir / "statements.jsonl", keep=1_000_000)
        self.server: TdsServer | None = None
        self.database = "master"
        self._nursery = nursery
        self._stop = trio.Event()
        self._stopped = trio.Event()

    async def start(self) -> None:
        self._stop = trio.Event()
        self._stopped = trio.Event()
        await self._nursery.start(self._run)

    async def stop(self) -> None:
        self._stop.set()
        await self._stopped.wait()

    async def _run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with open_server(
                users=self.users, db=str(self.file), port=self.port, statement_log=self.log
            ) as server:
                self.server = server
                self.database = server.engine.database
                task_status.started()
                await self._stop.wait()
        finally:
            self.server = None
            self._stopped.set()


@dataclass
class Chaos:
    workdir: Path
    idp: DevIdP
    db: Database
    http: httpx.AsyncClient
    token: str
    relay: RelayHandle | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def query_url(self) -> str:
        assert self.relay is not None
        return f"{self.relay.http_url}/v1/tunnels/{TUNNEL}/query"

    def use_relay(self, relay: RelayHandle) -> None:
        self.relay = relay
        for key in relay.connector_keys.values():
            HYGIENE.secret(pem_body(key), "a connector private key")

    def connector_config(
        self,
        connector_id: str,
        relay_urls: Sequence[str] | None = None,
        *,
        edit: Callable[[str], str] | None = None,
        **options: Any,
    ) -> Path:
        """The connector.toml of `connector_id` (`edit` rewrites its text, e.g. [database])."""
        assert self.relay is not None
        directory = self.workdir / connector_id
        directory.mkdir(exist_ok=True)
        key = write_key(directory / "connector.key", self.relay.connector_keys[connector_id])
        path = write_connector_config(
            directory,
            relay_urls=list(relay_urls or [self.relay.ws_url]),
            relay_public_keys=options.pop("relay_public_keys", [self.relay.relay_public_key]),
            private_key_file=key,
            issuer=self.idp.issuer,
            db_host="127.0.0.1",
            db_port=self.db.port,
            database=self.db.database,
            connector_id=connector_id,
            **options,
        )
        HYGIENE.file(directory / "audit.jsonl")
        if edit is not None:
            path.write_text(edit(path.read_text()))
        return path

    @asynccontextmanager
    async def connector(
        self,
        connector_id: str,
        relay_urls: Sequence[str] | None = None,
        *,
        edit: Callable[[str], str] | None = None,
        **options: Any,
    ) -> AsyncIterator[trio.Process]:
        """`edgetds connector run` as a process (SIGKILLed when the block exits)."""
        path = self.connector_config(connector_id, relay_urls, edit=edit, **options)
        log = self.workdir / f"{connector_id}.log"
        self.logs.append(log)
        HYGIENE.file(log)
        async with spawn(edgetds("connector", "run", "--config", str(path)), log) as process:
            yield process

    async def connections(self) -> int:
        assert self.relay is not None
        return await connections(self.http, self.relay.http_url, TUNNEL, self.token)

    async def wait_connections(self, count: int) -> float:
        assert self.relay is not None
        return await wait_connections(self.http, self.relay.http_url, TUNNEL, self.token, count)

    def connector_log(self, mark: int = 0) -> str:
        """The connectors' logs (their text after `mark`, a `connector_log_size()`)."""
        text = "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())
        return text[mark:]

    def connector_log_size(self) -> int:
        return len(self.connector_log())


def pem_body(key: Ed25519PrivateKey) -> str:
    """The base64 line of a key's PKCS#8 PEM (what would show if a key file leaked)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem.splitlines()[1]


def public_text(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class RelayProcess:
    """`edgetds relay serve` on a fixed port, killable and restartable on the same URL."""

    def __init__(
        self,
        workdir: Path,
        *,
        issuer: str,
        connector_ids: Sequence[str],
        limits: Mapping[str, Any] | None = None,
    ) -> None:
        self.port = reserved_port()
        self.workdir = workdir
        self.log = workdir / "relay.log"
        relay_key = Ed25519PrivateKey.generate()
        self.connector_keys = {cid: Ed25519PrivateKey.generate() for cid in connector_ids}
        key_file = write_key(workdir / "relay.key", relay_key)
        HYGIENE.secret(pem_body(relay_key), "the relay private key")
        HYGIENE.file(self.log)
        connectors = ", ".join(
            f"{json.dumps(cid)} = {json.dumps(public_text(key))}"
            for cid, key in self.connector_keys.items()
        )
        limit_lines = [
            f"{k} = {json.dumps(v)}"
            for k, v in {
                "auth_failure_burst": 10_000,
                "query_burst": 10_000,
                **(limits or {}),
            }.items()
        ]
        self.config = workdir / "relay.toml"
        self.config.write_text(
            "\n".join(
                [
                    "[relay]",
                    f'listen = "127.0.0.1:{self.port}"',
                    f"private_key_file = {json.dumps(str(key_file))}",
                    "",
                    f"[tunnels.{TUNNEL}]",
                    f"connectors = {{ {connectors} }}",
                    "",
                    "[[issuers]]",
                    f"issuer = {json.dumps(issuer)}",
                    'audience = "edgetds"',
                    "",
                    "[limits]",
                    *limit_lines,
                ]
            )
            + "\n"
        )
        self.handle = RelayHandle(
            kind="python",
            http_url=f"http://127.0.0.1:{self.port}",
            ws_url=f"ws://127.0.0.1:{self.port}",
            tunnel=TUNNEL,
            relay_public_key=public_text(relay_key),
            connector_keys=self.connector_keys,
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[trio.Process]:
        """The relay process; waits for its 'relay listening on' line; SIGKILL at exit."""
        mark = self.log.stat().st_size if self.log.exists() else 0
        async with spawn(edgetds("relay", "serve", "--config", str(self.config)), self.log) as p:

            async def listening() -> bool:  # the line printed by THIS start (the log is appended)
                if p.returncode is not None:
                    await wait_for_line(self.log, "\x00never", p)  # raises with the log tail
                return "relay listening on" in read_log(self.log, mark)

            await eventually(listening)
            yield p


@pytest.fixture
async def chaos(tmp_path: Path) -> AsyncIterator[Chaos]:
    with trio.CancelScope(deadline=trio.current_time() + 60) as scope:  # setup deadline
        async with AsyncExitStack() as contexts, trio.open_nursery() as nursery:
            idp = await contexts.enter_async_context(open_dev_idp(key_dir=tmp_path / "idp"))
            db = Database(tmp_path, nursery)
            await db.start()
            assert db.server is not None
            server = db.server
            await trio.to_thread.run_sync(admin_batch, server, SETUP_SQL)
            http = await contexts.enter_async_context(
                httpx.AsyncClient(verify=default_verify_context(), timeout=60)
            )
            token = HYGIENE.secret(
                idp.mint(sub="chaos", groups=["analysts"], expires_in=600), "a user token"
            )
            for name, password in (("reader", "reader-pw"), ("writer", "writer-pw")):
                HYGIENE.secret(password, f"the {name} database password")
            HYGIENE.file(tmp_path / "statements.jsonl")
            scope.deadline = trio.current_time() + 300  # tests set their own; this bounds teardown
            try:
                yield Chaos(tmp_path, idp, db, http, token)
            finally:
                await contexts.aclose()
                nursery.cancel_scope.cancel()
                db.log.close()
    if scope.cancelled_caught:
        raise trio.TooSlowError("the chaos stack did not start or stop in time")


RELAY_KINDS = ("python", "worker")


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


__all__ = [
    "RELAY_KINDS",
    "TUNNEL",
    "Chaos",
    "Database",
    "RelayProcess",
    "chaos",
    "connections",
    "open_relay",
]
