"""Start a relay for tests: `start_python_relay(...)` runs the Python relay in this process.

Both relays are started from the same inputs (tunnel name, connector ids, issuer URL + audience)
and yield the same `RelayHandle`, so one conformance suite can run against either; the Worker
twin is `tests.support.worker_relay.start_worker_relay`.

    async with open_dev_idp() as idp:
        async with start_python_relay(tunnel="demo", connector_ids=["conn-1"],
                                      issuer=idp.issuer) as relay:
            relay.http_url, relay.ws_url, relay.connector_keys["conn-1"], ...

The relay listens on 127.0.0.1 port 0 with fresh Ed25519 keys (relay and one per connector).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from identity.keys import encode_public_key
from protocol import Limits as ProtocolLimits
from protocol import make_enroll_token
from relay.config import RelayConfig, TunnelConfig, parse_limits
from relay.server import RunningRelay, open_relay

__all__ = [
    "TEST_LIMITS",
    "RelayHandle",
    "enroll_token",
    "open_python_relay",
    "post_streamed",
    "start_python_relay",
    "statement",
]

#: Default [limits] for test relays: every test client shares 127.0.0.1, so the per-address
#: failed-auth limit and the per-identity query rate are raised (as the Worker twin does).
#: Pass `limits=...` to test the limits themselves (then only what you pass differs from the
#: production defaults).
TEST_LIMITS: Mapping[str, Any] = {"auth_failure_burst": 10_000, "query_burst": 10_000}


@dataclass(frozen=True)
class RelayHandle:
    """What a test needs to talk to a relay: the same shape for the Python and the Worker relay,
    so one test runs against both."""

    kind: str  # "python" | "worker"
    http_url: str  # HTTP API base, e.g. "http://127.0.0.1:PORT"
    ws_url: str  # connectors dial {ws_url}/v1/tunnels/{tunnel}/connect
    tunnel: str
    relay_public_key: str  # "ed25519:..."
    connector_keys: dict[str, Ed25519PrivateKey]  # registered connector id -> private key
    #: the relay's signing key (enrolment tokens are made with it, SPEC.md 8.7)
    relay_key: Ed25519PrivateKey | None = None


def enroll_token(
    relay: RelayHandle,
    *,
    tunnel: str,
    connector_id: str,
    now: int | None = None,
    key: Ed25519PrivateKey | None = None,
) -> str:
    """An enrolment token for ``relay`` as `edgetds relay enroll --key ... --relay-url ...` makes
    it, offline (SPEC.md 8.7); ``key``: sign with another key than the relay's."""
    relay_key = key or relay.relay_key
    assert relay_key is not None
    return make_enroll_token(
        relay_key,
        relay_url=relay.http_url,
        tunnel=tunnel,
        connector_id=connector_id,
        now=int(time.time()) if now is None else now,
    )


def relay_config(
    *,
    tunnel: str,
    connector_ids: Sequence[str],
    issuer: str,
    audience: str = "edgetds",
    jwks_uri: str | None = None,
    jwks_file: str | Path | None = None,
    limits: Mapping[str, Any] | None = None,
    relay_key: Ed25519PrivateKey | None = None,
    connector_keys: Mapping[str, Ed25519PrivateKey] | None = None,
    listen: str = "127.0.0.1:0",
    audit_token_sha256: str = "",
    checkpoint_file: str = "",
    max_queries_per_identity: int | None = None,
    cors_origins: Sequence[str] = (),
    enrollment_file: str = "",
) -> tuple[RelayConfig, dict[str, Ed25519PrivateKey]]:
    """A RelayConfig for one tunnel (fresh keys unless given) and the connectors' private keys."""
    keys = dict(connector_keys or {})
    for cid in connector_ids:
        keys.setdefault(cid, Ed25519PrivateKey.generate())
    issuer_entry: dict[str, Any] = {"issuer": issuer, "audience": audience}
    per_identity = {}
    if max_queries_per_identity is not None:
        per_identity["max_queries_per_identity"] = max_queries_per_identity
    if jwks_uri:
        issuer_entry["jwks_uri"] = jwks_uri
    if jwks_file:
        issuer_entry["jwks_file"] = str(jwks_file)
    config = RelayConfig(
        listen=listen,
        private_key=relay_key or Ed25519PrivateKey.generate(),
        tunnels={
            tunnel: TunnelConfig(
                name=tunnel,
                connectors={cid: (keys[cid].public_key(),) for cid in connector_ids},
                cors_origins=tuple(cors_origins),
                **per_identity,
            )
        },
        identity={"issuers": [issuer_entry]},
        limits=parse_limits(dict(TEST_LIMITS if limits is None else limits)),
        audit_token_sha256=audit_token_sha256,
        checkpoint_file=checkpoint_file,
        enrollment_file=enrollment_file,
    )
    return config, {cid: keys[cid] for cid in connector_ids}


@asynccontextmanager
async def open_python_relay(
    *,
    tunnel: str,
    connector_ids: Sequence[str],
    issuer: str,
    audience: str = "edgetds",
    protocol_limits: ProtocolLimits | None = None,
    **options: Any,
) -> AsyncIterator[tuple[RelayHandle, RunningRelay]]:
    """Like `start_python_relay`, also yielding the `RunningRelay` (registry, counters)."""
    config, keys = relay_config(
        tunnel=tunnel, connector_ids=connector_ids, issuer=issuer, audience=audience, **options
    )
    async with open_relay(config, protocol_limits=protocol_limits) as running:
        handle = RelayHandle(
            kind="python",
            http_url=running.http_url,
            ws_url=running.ws_url,
            tunnel=tunnel,
            relay_public_key=encode_public_key(config.private_key),
            connector_keys=keys,
            relay_key=config.private_key,
        )
        yield handle, running


@asynccontextmanager
async def start_python_relay(
    *,
    tunnel: str,
    connector_ids: Sequence[str],
    issuer: str,
    audience: str = "edgetds",
    **options: Any,
) -> AsyncIterator[RelayHandle]:
    """Run the Python relay in-process on 127.0.0.1 (port 0) until the block exits.

    Args:
        tunnel: the one tunnel it serves.
        connector_ids: connector ids registered for it (a fresh Ed25519 key each).
        issuer: client-token issuer URL (OIDC discovery, or `jwks_uri`/`jwks_file`).
        audience: the client-token audience.
        **options: `jwks_uri`, `jwks_file`, `limits` ([limits] keys, default `TEST_LIMITS`),
            `relay_key`, `connector_keys` (reuse keys), `protocol_limits`, `listen`,
            `audit_token_sha256`, `checkpoint_file`, `enrollment_file`,
            `max_queries_per_identity` and `cors_origins` (the tunnel's).
    """
    async with open_python_relay(
        tunnel=tunnel, connector_ids=connector_ids, issuer=issuer, audience=audience, **options
    ) as (handle, _running):
        yield handle


def statement(size: int) -> str:
    """A SQL statement of exactly ``size`` UTF-8 bytes (two per é), for size-limit tests."""
    head, tail = "select N'", "'"
    body = size - len(head) - len(tail)
    return head + "é" * (body // 2) + "x" * (body % 2) + tail


@dataclass(frozen=True)
class Streamed:
    """A query answer read as it streamed: status, headers and the whole body."""

    status_code: int
    headers: httpx.Headers
    text: str


async def post_streamed(
    client: httpx.AsyncClient,
    url: str,
    *,
    json: Mapping[str, Any],
    headers: Mapping[str, str],
    lines: int,
    received: trio.Event,
) -> Streamed:
    """POST a query and read its answer as it streams; set `received` once `lines` lines have
    arrived (so a fake connector can fail right after the client has them), then read to the
    end."""
    body = b""
    async with client.stream("POST", url, json=dict(json), headers=dict(headers)) as response:
        async for chunk in response.aiter_bytes():
            body += chunk
            if body.count(b"\n") >= lines:
                received.set()
    return Streamed(response.status_code, response.headers, body.decode())
