"""A whole real stack for operations tests: dev IdP, tdslite, the Python relay, a connector config.

    async with open_stack(tmp_path) as stack:
        stack.config_path                    # connector.toml the relay accepts (keys registered)
        async with open_connector(load_config(stack.config_path)) as connector: ...
        response = await post_query(stack, sql="SELECT 1 AS n")

Everything listens on 127.0.0.1 port 0; the connector key is a real key file registered at the
relay; tokens come from the dev IdP. Used by tests/ops and tests/binary.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import tdslite
from edgetds.devidp import DevIdP, open_dev_idp
from identity.keys import GeneratedKey, generate_key_files, load_private_key
from identity.oidc import default_verify_context
from tests.support.connector_stack import TDSLITE_USERS, write_connector_config
from tests.support.relays import RelayHandle, start_python_relay

__all__ = ["Stack", "open_stack", "post_query", "write_relay_toml", "write_stack_config"]


@dataclass
class Stack:
    directory: Path
    idp: DevIdP
    tds: Any  # tdslite.TdsServer
    relay: RelayHandle | None  # the running relay (None between `run_relay` blocks)
    keys: dict[str, GeneratedKey]  # connector id -> its key files (registered at the relay)
    users_file: Path
    config_path: Path

    @property
    def key(self) -> GeneratedKey:
        return self.keys["conn-1"]

    @asynccontextmanager
    async def run_relay(
        self, *, listen: str = "127.0.0.1:0", relay_key: Ed25519PrivateKey | None = None
    ) -> AsyncIterator[RelayHandle]:
        """Run a Python relay with this stack's connectors registered; sets `self.relay`."""
        async with start_python_relay(
            tunnel="demo",
            connector_ids=list(self.keys),
            issuer=self.idp.issuer,
            connector_keys={cid: load_private_key(k.private_path) for cid, k in self.keys.items()},
            listen=listen,
            relay_key=relay_key,
        ) as relay:
            self.relay = relay
            yield relay

    def token(self, sub: str = "alice", groups: Sequence[str] = ("analysts",)) -> str:
        return self.idp.mint(sub=sub, groups=list(groups))


def write_stack_config(stack: Stack, name: str = "connector", **overrides: Any) -> Path:
    """A connector.toml for this stack in ``directory/name`` (overrides: write_connector_config)."""
    relay = stack.relay
    options: dict[str, Any] = {
        "relay_urls": [relay.ws_url] if relay else [],
        "relay_public_keys": [relay.relay_public_key] if relay else [],
        "private_key_file": stack.key.private_path,
        "issuer": stack.idp.issuer,
        "db_host": "127.0.0.1",
        "db_port": stack.tds.port,
        "database": stack.tds.engine.database,
        "ha_connections": 1,
        **overrides,
    }
    return write_connector_config(stack.directory / name, **options)


def write_relay_toml(
    path: Path, *, relay_key: GeneratedKey, connector_keys: list[str], issuer: str
) -> None:
    """A relay.toml for `edgetds relay serve`: tunnel "demo" served by conn-1 (one key, or
    several during a rotation), client tokens from `issuer`, the per-address limits raised."""
    registered = connector_keys[0] if len(connector_keys) == 1 else connector_keys
    path.write_text(
        "\n".join([
            "[relay]",
            'listen = "127.0.0.1:0"',
            f"private_key_file = {json.dumps(str(relay_key.private_path))}",
            "[tunnels.demo]",
            f"connectors = {{ \"conn-1\" = {json.dumps(registered)} }}",
            "[[issuers]]",
            f"issuer = {json.dumps(issuer)}",
            'audience = "edgetds"',
            "[limits]",
            "auth_failure_burst = 10000",
            "query_burst = 10000",
        ])
        + "\n"
    )  # fmt: skip


def _prepare(directory: Path, connector_ids: Sequence[str]) -> tuple[dict[str, GeneratedKey], Path]:
    directory.mkdir(parents=True, exist_ok=True)
    users_file = directory / "tds-users.toml"
    users_file.write_text(TDSLITE_USERS)
    keys = {cid: generate_key_files(directory / "keys", cid) for cid in connector_ids}
    return keys, users_file


@asynccontextmanager
async def open_stack(
    directory: Path,
    *,
    relay_listen: str = "127.0.0.1:0",
    connector_ids: Sequence[str] = ("conn-1",),
    relay_key: Ed25519PrivateKey | None = None,
    relay: bool = True,
    **config: Any,
) -> AsyncIterator[Stack]:
    """Start the dev IdP, tdslite (logins reader/writer) and a Python relay; write the config
    (for "conn-1", which must be among `connector_ids`).

    `relay_listen` "[::1]:0" puts the relay on IPv6 loopback; `relay_key` fixes its key.
    With ``relay=False`` no relay runs (start one with `Stack.run_relay`) and no config is written.
    """
    keys, users_file = _prepare(directory, connector_ids)
    async with (
        open_dev_idp(key_dir=directory / "idp") as idp,
        tdslite.open_server(users=users_file) as tds,
    ):
        stack = Stack(directory, idp, tds, None, keys, users_file, directory / "none")
        if not relay:
            yield stack
            return
        async with stack.run_relay(listen=relay_listen, relay_key=relay_key):
            stack.config_path = write_stack_config(stack, **config)
            yield stack


async def post_query(
    stack: Stack, *, sql: str, token: str | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """POST a query to the relay's HTTP API; returns the status and the NDJSON lines."""
    assert stack.relay is not None, "no relay is running"
    async with httpx.AsyncClient(verify=default_verify_context(), timeout=10.0) as client:
        response = await client.post(
            f"{stack.relay.http_url}/v1/tunnels/{stack.relay.tunnel}/query",
            json={"sql": sql},
            headers={"Authorization": f"Bearer {token or stack.token()}"},
        )
    lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    return response.status_code, lines
