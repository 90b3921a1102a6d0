"""Start the Cloudflare relay Worker (relay/worker/) under the real workerd runtime, for tests.

``start_worker_relay(...)`` is the Worker twin of ``start_python_relay(...)`` (tests/support/
relays.py): same inputs (tunnel, connector ids, issuer URL + audience), same ``RelayHandle``, so the
conformance suite can run against both. ``open_worker_relay(...)`` yields a :class:`WorkerRelay`
with Worker-only extras (the example app's URL, the test hooks for DO state and ``ctx.abort()``).

How it runs: ``node relay/worker/scripts/workerd.mjs build`` bundles the Worker with esbuild and
renders ``workerd.capnp.template`` into a private temp dir; then ``workerd serve`` runs it on
listening sockets this process bound on 127.0.0.1 port 0 (passed as ``--socket-fd``), so the port
is known without races. workerd is killed at the end (SIGTERM would drain for ~20 s).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from identity.keys import encode_public_key
from identity.oidc import default_verify_context
from tests.support.node import NODE
from tests.support.relays import RelayHandle
from tests.support.waiting import eventually

__all__ = [
    "idle_until_hibernated",
    "ROOT",
    "Bindings",
    "RelayHandle",
    "WorkerRelay",
    "open_worker_relay",
    "relay_bindings",
    "start_worker_relay",
]

ROOT = Path(__file__).resolve().parents[2]
WORKERD = ROOT / "node_modules" / ".bin" / "workerd"
BUILD_SCRIPT = ROOT / "relay" / "worker" / "scripts" / "workerd.mjs"
#: Bundles keyed by a digest of the sources (built once per source change, not per test).
BUNDLE_CACHE = Path(tempfile.gettempdir()) / "edgetds-worker-bundles"
#: Test runs raise the edge rate limits so that many auth-failure tests share one address.
TEST_LIMITS = {"auth_failure_burst": 10_000, "query_burst": 10_000, "deadline_grace_ms": 300}


def public_key_text(key: Ed25519PrivateKey) -> str:
    """``ed25519:`` + base64url of the raw public key, as relay.toml and the Worker's TUNNELS
    variable name a connector's key."""
    return encode_public_key(key)


@dataclass
class WorkerRelay:
    """A running workerd with the relay Worker (and optionally the example app).

    ``process``: the workerd now serving (``restart()`` replaces it).
    """

    handle: RelayHandle
    app_url: str | None
    out_dir: Path
    process: trio.Process
    _start: Callable[[], Awaitable[trio.Process]]

    async def restart(self) -> None:
        """Kill workerd (SIGKILL: no drain, as a crash) and start a new one with the same
        configuration, listening socket (same URL) and Durable Object storage directory."""
        self.process.kill()
        await self.process.wait()
        self.process = await self._start()
        await _wait_ready(self.handle.http_url, self.process)

    def hook_url(self, action: str, *, shard: int = 0) -> str:
        """URL of a test hook (``_test/state`` or ``_test/abort``) of the tunnel's DO shard."""
        return (
            f"{self.handle.http_url}/v1/tunnels/{self.handle.tunnel}/_test/{action}?shard={shard}"
        )

    async def do_state(self, client: httpx.AsyncClient, *, shard: int = 0) -> dict[str, Any]:
        response = await client.get(self.hook_url("state", shard=shard))
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state


def _listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


async def _wait_ready(url: str, process: trio.Process) -> None:
    async with httpx.AsyncClient(verify=default_verify_context()) as client:

        async def answers() -> bool:
            if process.returncode is not None:
                raise RuntimeError(f"workerd exited with {process.returncode} while starting")
            try:
                await client.get(url + "/ready-probe")
            except httpx.TransportError:
                return False
            return True

        with trio.fail_after(20):
            await eventually(answers)


@dataclass(frozen=True)
class Bindings:
    """A relay Worker's bindings for a test (``env``: name -> text, as wrangler sets them) and
    the keys behind them."""

    env: dict[str, str]
    relay_key: Ed25519PrivateKey
    connector_keys: dict[str, Ed25519PrivateKey]


def relay_bindings(
    *,
    tunnel: str,
    connector_ids: Sequence[str],
    issuer: str,
    audience: str = "edgetds",
    jwks_uri: str | None = None,
    shards: int = 1,
    limits: Mapping[str, float] | None = None,
    extra_tunnels: Mapping[str, Sequence[str]] | None = None,
    rotation: Mapping[str, Sequence[str]] | None = None,
    audit_token_sha256: str = "",
    tunnel_settings: Mapping[str, Any] | None = None,
    cors_origins: Sequence[str] = (),
) -> Bindings:
    """Fresh relay and connector keys and the bindings that register them (see
    :func:`open_worker_relay` for the arguments)."""
    relay_key = Ed25519PrivateKey.generate()
    connector_keys = {cid: Ed25519PrivateKey.generate() for cid in connector_ids}
    tunnels: dict[str, dict[str, Any]] = {
        tunnel: {cid: public_key_text(key) for cid, key in connector_keys.items()}
    }
    for cid, newer in (rotation or {}).items():
        tunnels[tunnel][cid] = [*newer, tunnels[tunnel][cid]]
    for name, ids in (extra_tunnels or {}).items():
        tunnels[name] = {cid: public_key_text(Ed25519PrivateKey.generate()) for cid in ids}
    settings = {**(tunnel_settings or {})}
    if cors_origins:
        settings["cors_origins"] = list(cors_origins)
    if settings:
        tunnels[tunnel] = {"connectors": tunnels[tunnel], **settings}
    issuer_entry: dict[str, Any] = {"issuer": issuer, "audience": audience}
    if jwks_uri is not None:
        issuer_entry["jwks_uri"] = jwks_uri
    pem = relay_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    env = {
        "RELAY_PRIVATE_KEY": pem,
        "TUNNELS": json.dumps(tunnels),
        "ISSUERS": json.dumps([issuer_entry]),
        "TUNNEL_SHARDS": str(shards),
        "LIMITS": json.dumps(dict(limits) if limits is not None else TEST_LIMITS),
        "AUDIT_TOKEN_SHA256": audit_token_sha256,
    }
    return Bindings(env=env, relay_key=relay_key, connector_keys=connector_keys)


@asynccontextmanager
async def open_worker_relay(
    *,
    tunnel: str,
    connector_ids: Sequence[str],
    issuer: str,
    audience: str = "edgetds",
    jwks_uri: str | None = None,
    shards: int = 1,
    limits: Mapping[str, float] | None = None,
    test_hooks: bool = True,
    app: bool = False,
    extra_tunnels: Mapping[str, Sequence[str]] | None = None,
    rotation: Mapping[str, Sequence[str]] | None = None,
    audit_token_sha256: str = "",
    tunnel_settings: Mapping[str, Any] | None = None,
    cors_origins: Sequence[str] = (),
) -> AsyncIterator[WorkerRelay]:
    """Run the relay Worker under workerd on 127.0.0.1 (random ports) until the block exits.

    Args:
        tunnel: the tunnel name; ``connector_ids`` get fresh Ed25519 keys registered for it.
        issuer, audience, jwks_uri: the one trusted client-token issuer (discovery if no jwks_uri).
        shards: TUNNEL_SHARDS (Durable Objects per tunnel).
        limits: LIMITS overrides (default: TEST_LIMITS, high edge rate limits).
        test_hooks: run the test build (relay/worker/scripts/test-entry.js), which adds
            ``/v1/tunnels/{t}/_test/*`` (DO state and ctx.abort()) to the production Worker.
        app: also run examples/worker-app with a service binding to the relay.
        rotation: connector id -> newer public keys (``ed25519:...``) registered ahead of its
            generated key, as during a key rotation (TUNNELS lists ``[*newer, generated]``).
        audit_token_sha256: AUDIT_TOKEN_SHA256 (who may read audit checkpoints; "" = nobody).
        tunnel_settings: per-tunnel settings of ``tunnel`` (e.g. max_queries_per_identity).
        cors_origins: the web origins that may call ``tunnel`` from a browser (its setting).
    """
    bindings = relay_bindings(
        tunnel=tunnel,
        connector_ids=connector_ids,
        issuer=issuer,
        audience=audience,
        jwks_uri=jwks_uri,
        shards=shards,
        limits=limits,
        extra_tunnels=extra_tunnels,
        rotation=rotation,
        audit_token_sha256=audit_token_sha256,
        tunnel_settings=tunnel_settings,
        cors_origins=cors_origins,
    )
    env, relay_key, connector_keys = bindings.env, bindings.relay_key, bindings.connector_keys
    out_dir = Path(tempfile.mkdtemp(prefix="edgetds-workerd-"))
    env_file = out_dir / "env.json"
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(env, f)
    build = [str(NODE), str(BUILD_SCRIPT), "build", "--out", str(out_dir), "--env", str(env_file)]
    build += ["--cache", str(BUNDLE_CACHE)]
    if app:
        build += ["--app", "--app-tunnel", tunnel]
    if test_hooks:
        build += ["--test-hooks"]
    with trio.fail_after(60):
        await trio.run_process(build, stdout=subprocess.DEVNULL, cwd=ROOT)
    http_sock = _listener()
    app_sock = _listener() if app else None
    fds = [http_sock.fileno()] + ([app_sock.fileno()] if app_sock else [])
    command = [str(WORKERD), "serve", str(out_dir / "config.capnp")]
    command += [f"--socket-fd=http={http_sock.fileno()}"]
    if app_sock is not None:
        command += [f"--socket-fd=app={app_sock.fileno()}"]
    if os.environ.get("EDGETDS_WORKERD_INSPECTOR"):  # host:port (bench/profile_worker.py)
        command += [f"--inspector-addr={os.environ['EDGETDS_WORKERD_INSPECTOR']}"]
    log = open(out_dir / "workerd.log", "wb")  # noqa: ASYNC230, SIM115 - closed in finally

    async def start() -> trio.Process:
        return await trio.lowlevel.open_process(
            command, pass_fds=fds, stdout=log, stderr=subprocess.STDOUT, cwd=out_dir
        )

    process = await start()
    port = http_sock.getsockname()[1]
    http_url = f"http://127.0.0.1:{port}"
    app_url = f"http://127.0.0.1:{app_sock.getsockname()[1]}" if app_sock else None
    relay: WorkerRelay | None = None
    try:
        await _wait_ready(http_url, process)
        handle = RelayHandle(
            kind="worker",
            http_url=http_url,
            ws_url=f"ws://127.0.0.1:{port}",
            tunnel=tunnel,
            relay_public_key=public_key_text(relay_key),
            connector_keys=connector_keys,
            relay_key=relay_key,
        )
        relay = WorkerRelay(handle, app_url, out_dir, process, start)
        yield relay
    finally:
        if relay is not None:
            process = relay.process  # restart() may have replaced it
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
        log.close()
        http_sock.close()
        if app_sock is not None:
            app_sock.close()
        if os.environ.get("EDGETDS_KEEP_WORKERD") != "1":
            shutil.rmtree(out_dir, ignore_errors=True)


@asynccontextmanager
async def start_worker_relay(
    *,
    tunnel: str,
    connector_ids: Sequence[str],
    issuer: str,
    audience: str = "edgetds",
    **options: Any,
) -> AsyncIterator[RelayHandle]:
    """The drop-in for ``start_python_relay``: yields only the :class:`RelayHandle`."""
    async with open_worker_relay(
        tunnel=tunnel, connector_ids=connector_ids, issuer=issuer, audience=audience, **options
    ) as relay:
        yield relay.handle


def workerd_log(relay: WorkerRelay) -> str:
    """workerd's combined output so far (for assertion messages)."""
    path = relay.out_dir / "workerd.log"
    return path.read_text(errors="replace") if path.exists() else ""


#: workerd evicts an idle Durable Object (hibernation) after about 10 s of no events
HIBERNATION_IDLE_S = 12


async def idle_until_hibernated() -> None:
    """Stay away from the Worker until workerd has evicted the idle Durable Object. There is no
    event to wait for: any request or probe would wake the object, so this waits on workerd's
    own idle timer (tests then check the object was rebuilt: its instance id changed)."""
    await trio.sleep(HIBERNATION_IDLE_S)
