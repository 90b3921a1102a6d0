"""The relay conformance suite: the same tests against BOTH relays (Python and Worker).

Each test gets a ``stack`` parametrized over ``python`` and ``worker``: dev IdP -> relay ->
real connector (connector/) -> tdslite, with real tokens, keys and TDS. The connector reaches the
relay through a TCP proxy (:class:`CutProxy`) so a test can cut the connector's network mid-query
the same way for both relays. Stack pieces come from tests/support/e2e_stack.py (one definition of
the stack); tests/conformance/conftest.py imports the `conf` fixture.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from connector.config import load_config
from connector.runtime import Connector, open_connector
from edgetds.devidp import open_dev_idp
from identity.oidc import default_verify_context
from tdslite import open_server
from tests.support.connector_stack import write_connector_config
from tests.support.e2e_stack import SETUP_SQL, TDSLITE_USERS, Stack, admin_batch, write_key
from tests.support.relays import RelayHandle, start_python_relay
from tests.support.worker_relay import start_worker_relay
from tests.support.wrangler import open_wrangler_dev

#: EDGETDS_WORKER_RUNNER=wrangler runs the Worker under `wrangler dev` from its wrangler.toml
#: (tests/support/wrangler.py) instead of workerd from the capnp template.
RELAYS: dict[str, Callable[..., AbstractAsyncContextManager[RelayHandle]]] = {
    "python": start_python_relay,
    "worker": (
        open_wrangler_dev
        if os.environ.get("EDGETDS_WORKER_RUNNER") == "wrangler"
        else start_worker_relay
    ),
}
CONNECTOR_IDS = ("conn-1", "conn-2")


class CutProxy:
    """A loopback TCP proxy whose live connections can be cut (FIN both ways) on demand."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._live: set[trio.SocketStream] = set()
        self.accepted = 0

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        try:
            upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await client.aclose()
            return
        self._live |= {client, upstream}
        async with client, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._pipe, client, upstream, nursery.cancel_scope)
            nursery.start_soon(self._pipe, upstream, client, nursery.cancel_scope)
        self._live -= {client, upstream}

    @staticmethod
    async def _pipe(
        src: trio.SocketStream, dst: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()

    async def cut(self) -> int:
        """Close every live connection; returns how many TCP connections were cut."""
        live = list(self._live)
        for stream in live:
            await stream.aclose()
        return len(live)


@dataclass
class Conformance:
    """The stack plus what conformance tests need beyond tests/e2e's Stack."""

    stack: Stack
    kind: str
    proxy: CutProxy
    tmp_path: Path

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stack, name)

    @property
    def relay(self) -> RelayHandle:
        return self.stack.relay

    def relay_url_via_proxy(self) -> str:
        return f"ws://127.0.0.1:{self.proxy.port}"

    @asynccontextmanager
    async def open_connector(self, connector_id: str, **options: Any) -> AsyncIterator[Connector]:
        """Run a real connector (a registered id) through the proxy; READY on entry.

        Use it as ``async with`` in the task that owns it (a test, or the fixture for conn-1).
        """
        key_file = self.tmp_path / f"{connector_id}.key"
        key = write_key(key_file, self.relay.connector_keys[connector_id])
        path = write_connector_config(
            self.tmp_path / connector_id,
            relay_urls=[self.relay_url_via_proxy()],
            relay_public_keys=[self.relay.relay_public_key],
            private_key_file=key,
            issuer=self.stack.idp.issuer,
            db_host=self.stack.db.host,
            db_port=self.stack.db.port,
            database=self.stack.db.engine.database,
            connector_id=connector_id,
            **options,
        )
        async with open_connector(load_config(path)) as connector:
            await connector.wait_ready(connector.config.tunnel.ha_connections)
            yield connector


@asynccontextmanager
async def open_conformance(
    kind: str, tmp_path: Path, **relay_options: Any
) -> AsyncIterator[Conformance]:
    """The stack on the ``kind`` relay; ``relay_options`` go to both relays' starters (e.g.
    ``cors_origins``)."""
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    async with AsyncExitStack() as contexts, trio.open_nursery() as nursery:
        idp = await contexts.enter_async_context(open_dev_idp(key_dir=tmp_path / "idp"))
        db = await contexts.enter_async_context(open_server(users=users, db=":memory:"))
        await trio.to_thread.run_sync(admin_batch, db, SETUP_SQL)
        relay = await contexts.enter_async_context(
            RELAYS[kind](
                tunnel="demo", connector_ids=list(CONNECTOR_IDS), issuer=idp.issuer, **relay_options
            )
        )
        port = int(relay.ws_url.rsplit(":", 1)[1])
        proxy = CutProxy(port)
        await nursery.start(proxy.serve)
        http = await contexts.enter_async_context(
            httpx.AsyncClient(verify=default_verify_context(), timeout=60)
        )
        partial = Stack(idp, db, relay, None, http, tmp_path)  # type: ignore[arg-type]
        conf = Conformance(partial, kind, proxy, tmp_path)
        conf.stack.connector = await contexts.enter_async_context(conf.open_connector("conn-1"))
        try:
            yield conf
        finally:
            await contexts.aclose()
            nursery.cancel_scope.cancel()


@pytest.fixture(params=sorted(RELAYS))
async def conf(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Conformance]:
    with trio.CancelScope(deadline=trio.current_time() + 60) as scope:  # setup deadline
        async with open_conformance(request.param, tmp_path) as conformance:
            scope.deadline = trio.current_time() + 300  # tests set their own; this bounds teardown
            yield conformance
    if scope.cancelled_caught:
        raise trio.TooSlowError(f"the {request.param} conformance stack did not start or stop")
