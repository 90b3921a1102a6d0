"""The whole demo stack on 127.0.0.1 for load tests and benchmarks, all real parts:

tdslite (a ``digits`` table 0..9 that cross joins into any number of rows, and optionally the
``sample`` seed, slow to load) + dev IdP (keys in a directory, so
`edgetds loadtest --dev-idp-key-dir` works) + the Python relay + a connector, in this Trio run
or as a subprocess (``edgetds connector run``; the memory benchmark samples its RSS from /proc).

    async with open_demo_stack(tmp_path) as stack:
        stack.relay.http_url, stack.direct (a DirectSpec for python-tds), stack.idp.mint(...)

It only wires the owners' starters together (tdslite.open_server, edgetds.devidp.open_dev_idp,
tests.support.relays.start_python_relay, tests.support.connector_stack, connector.runtime).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import tdslite
from bench.cputime import process_cpu_seconds, user_system_s
from connector.config import load_config
from connector.runtime import open_connector
from edgetds.devidp import DevIdP, open_dev_idp
from edgetds.loadtest.targets import DirectSpec
from identity.keys import encode_public_key
from tests.support.connector_stack import TDSLITE_USERS
from tests.support.e2e_stack import write_conn1_config, write_key
from tests.support.processes import stop_processes
from tests.support.relays import RelayHandle, start_python_relay

__all__ = [
    "NO_RATE_LIMITS",
    "DemoStack",
    "open_demo_stack",
    "listening_address",
    "open_diy_service",
    "context_switches",
    "process_cpu_seconds",
    "run_bare_client",
    "run_bare_client_closed_and_paced",
    "strace_counts",
    "user_system_s",
    "wait_connected",
]


def context_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of process ``pid``, summed over its threads."""
    voluntary = involuntary = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for text in (task / "status").read_text().splitlines():
            if text.startswith("voluntary_ctxt_switches"):
                voluntary += int(text.split()[1])
            elif text.startswith("nonvoluntary_ctxt_switches"):
                involuntary += int(text.split()[1])
    return voluntary, involuntary


def strace_counts(summary: str) -> dict[str, int]:
    """Calls per system call name in the table ``strace -c`` writes, with its "total"."""
    counts: dict[str, int] = {}
    for text in summary.splitlines():
        words = text.split()  # % time, seconds, usecs/call, calls, [errors,] syscall
        if len(words) >= 5 and words[0][0].isdigit():
            counts[words[-1]] = int(words[3])
    if "total" not in counts:
        raise ValueError("no total line in the strace summary")
    return counts


#: an admin login to create the benchmark tables (the connector only has reader and writer)
USERS = TDSLITE_USERS + '\n[users.owner]\npassword = "owner-pw"\nrole = "admin"\n'
SETUP_SQL = (
    "CREATE TABLE digits (d int PRIMARY KEY)",
    "INSERT INTO digits (d) VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)",
)
#: a load test sends many queries as few identities: switch the relay's per-identity limiter off
NO_RATE_LIMITS = {"queries_per_second": 0, "query_burst": 0, "auth_failures_per_second": 0}
TUNNEL = "demo"


@dataclass(frozen=True)
class DemoStack:
    relay: RelayHandle
    idp: DevIdP
    idp_key_dir: Path
    direct: DirectSpec  # the connector's "reader" login, straight to tdslite
    connector_config: Path
    #: the connector subprocess (connector="subprocess"), else None
    connector_process: trio.Process | None
    #: the tdslite process id (tds_process=True), else None (tdslite runs in this process)
    tds_pid: int | None = None
    #: the relay process id (relay_kind "python-process" or "worker"), else None
    relay_pid: int | None = None
    #: every connector process (``replicas`` > 1: replica N is ``connector_processes[N - 1]``)
    connector_processes: tuple[trio.Process, ...] = ()


async def wait_connected(
    relay: RelayHandle, idp: DevIdP, timeout_s: float = 20, *, connections: int = 1
) -> None:
    """Wait until the relay reports ``connections`` connector connections for the tunnel (GET
    .../status)."""
    import httpx

    token = idp.mint(sub="stack-probe", groups=["analysts"])
    url = f"{relay.http_url}/v1/tunnels/{relay.tunnel}/status"
    with trio.fail_after(timeout_s):
        async with httpx.AsyncClient(trust_env=False) as client:
            while True:
                resp = await client.get(url, headers={"authorization": f"Bearer {token}"})
                if resp.status_code == 200 and resp.json().get("connections", 0) >= connections:
                    return
                await trio.sleep(0.05)


def _prepare(workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    users = workdir / "tdslite-users.toml"
    users.write_text(USERS)
    return users


@asynccontextmanager
async def _start_relay(
    kind: str, issuer: str, limits: dict[str, Any] | None, workdir: Path
) -> AsyncIterator[tuple[RelayHandle, int | None]]:
    """(relay handle, relay pid if it is its own process)."""
    if kind == "python-process":
        async with _relay_process(workdir, issuer, {**NO_RATE_LIMITS, **(limits or {})}) as pair:
            yield pair
        return
    if kind == "worker":
        from tests.support.worker_relay import open_worker_relay

        # the production bundle (src/index.js), not the test build with its /_test/ routes
        async with open_worker_relay(
            tunnel=TUNNEL, connector_ids=["conn-1"], issuer=issuer, limits=limits, test_hooks=False
        ) as worker:
            yield worker.handle, worker.process.pid
        return
    async with start_python_relay(
        tunnel=TUNNEL,
        connector_ids=["conn-1"],
        issuer=issuer,
        limits={**NO_RATE_LIMITS, **(limits or {})},
    ) as handle:
        yield handle, None


def _set_pool_size(config: Path, pool_size: int) -> None:
    text = config.read_text().replace("pool_size = 16", f"pool_size = {pool_size}")
    config.write_text(text)


def _setup(host: str, port: int) -> str:
    """Create the benchmark tables; returns the database name."""
    import pytds

    with pytds.connect(
        dsn=host, port=port, user="owner", password="owner-pw", autocommit=True
    ) as conn:
        with conn.cursor() as cursor:
            for sql in SETUP_SQL:
                cursor.execute(sql)
            cursor.execute("SELECT DB_NAME()")
            return str(cursor.fetchone()[0])


@asynccontextmanager
async def _open_tdslite(
    users: Path, *, db: str, seed: str | None, process: bool
) -> AsyncIterator[tuple[str, int, int | None]]:
    """tdslite in this Trio run, or as ``edgetds tdslite serve`` (its own GIL) when process."""
    if not process:
        async with tdslite.open_server(db=db, users=users, seed=seed) as tds:
            yield tds.host, tds.port, None
        return
    cmd = ["tdslite", "serve", "--port", "0", "--db", db, "--users", str(users)]
    async with _edgetds_process(cmd + (["--seed", seed] if seed else [])) as (proc, address):
        # "tdslite listening on HOST:PORT"
        host, _, port = address.rpartition(":")
        yield host, int(port), proc.pid


async def listening_address(proc: trio.Process, what: str, *, timeout_s: float) -> str:
    """The last word of ``proc``'s first stdout line ("... listening on http://HOST:PORT"), read
    a byte at a time (nothing after it is taken from the pipe)."""
    assert proc.stdout is not None
    line = b""
    with trio.fail_after(timeout_s):
        while not line.endswith(b"\n"):
            chunk = await proc.stdout.receive_some(1)
            if not chunk:
                raise RuntimeError(f"{what} exited before listening")
            line += chunk
    return line.decode().split()[-1]


@asynccontextmanager
async def _edgetds_process(
    args: list[str], stderr: Any = None, *, module: str = "edgetds"
) -> AsyncIterator[tuple[trio.Process, str]]:
    """Run ``python -m MODULE ARGS`` (``edgetds ARGS``); yield it and the last word of its first
    stdout line (its address)."""
    cmd = [sys.executable, "-m", module, *args]
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(trio.run_process, cmd, check=False, stdout=subprocess.PIPE, stderr=stderr)
        )
        address = await listening_address(proc, f"edgetds {args[0]}", timeout_s=60)
        try:
            yield proc, address
        finally:
            proc.kill()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_diy_service(
    direct: DirectSpec, workdir: Path, *, pool: int = 16, server: str = "hypercorn"
) -> AsyncIterator[tuple[str, int]]:
    """bench/diy_service.py (``--server``) on ``direct``'s login as its own process: (its URL,
    its pid)."""
    args = ["--direct", await _direct_dsn(direct, workdir), "--pool", str(pool), "--server", server]
    async with _edgetds_process(args, module="bench.diy_service") as (proc, url):
        # "diy listening on http://HOST:PORT"
        yield url, proc.pid


async def run_bare_client(
    direct: DirectSpec, workdir: Path, *, count: int, rate: float = 0
) -> dict[str, float]:
    """bench/bare_client.py on ``direct``'s login as its own process: ``count`` queries closed
    loop (or ``rate`` per second); its figures (count, qps, cpu_ms_per_query)."""
    args = ["--direct", await _direct_dsn(direct, workdir), "--count", str(count)]
    cmd = [sys.executable, "-m", "bench.bare_client", *args, "--rate", str(rate)]
    done = await trio.run_process(cmd, capture_stdout=True)
    figures: dict[str, float] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return figures


async def run_bare_client_closed_and_paced(
    direct: DirectSpec, workdir: Path, *, count: int, rate: float
) -> dict[str, dict[str, float]]:
    """`run_bare_client` closed loop, then at ``rate`` per second (a tunnel's pace): its figures
    as ``{"closed": ..., "paced": ...}``."""
    closed = await run_bare_client(direct, workdir, count=count)
    paced = await run_bare_client(direct, workdir, count=count, rate=rate)
    return {"closed": closed, "paced": paced}


async def _direct_dsn(direct: DirectSpec, workdir: Path) -> str:
    """``direct`` as a ``--direct`` DSN, its password in a file under ``workdir``."""
    secret = trio.Path(workdir) / "direct-password"
    await secret.parent.mkdir(parents=True, exist_ok=True)
    await secret.write_text(direct.password)
    return (
        f"host={direct.host};port={direct.port};user={direct.user};password=@{secret};"
        f"database={direct.database}"
    )


@asynccontextmanager
async def _relay_process(
    workdir: Path, issuer: str, limits: dict[str, Any]
) -> AsyncIterator[tuple[RelayHandle, int]]:
    """The Python relay as ``edgetds relay serve`` (its own process and GIL), and its pid."""
    relay_key, conn_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    config = _write_relay_config(workdir, issuer, limits, relay_key, conn_key)
    args = ["relay", "serve", "--config", str(config), "--log-level", "warning"]
    async with _edgetds_process(args) as (proc, url):
        # "relay listening on http://HOST:PORT"
        yield relay_handle(url, relay_key, conn_key), proc.pid


def relay_handle(
    url: str, relay_key: Ed25519PrivateKey, conn_key: Ed25519PrivateKey
) -> RelayHandle:
    """The handle of a relay process at ``url`` configured by `_write_relay_config`."""
    return RelayHandle(
        kind="python",
        http_url=url,
        ws_url="ws://" + url.split("://", 1)[1],
        tunnel=TUNNEL,
        relay_public_key=encode_public_key(relay_key),
        connector_keys={"conn-1": conn_key},
    )


def _write_relay_config(
    workdir: Path,
    issuer: str,
    limits: dict[str, Any],
    relay_key: Ed25519PrivateKey,
    conn_key: Ed25519PrivateKey,
) -> Path:
    (workdir / "keys").mkdir(parents=True, exist_ok=True)
    key_file = write_key(workdir / "keys" / "relay.key", relay_key)
    lines = [
        "[relay]",
        'listen = "127.0.0.1:0"',
        f"private_key_file = {json.dumps(str(key_file))}",
        f"[tunnels.{TUNNEL}]",
        f'connectors = {{ "conn-1" = "{encode_public_key(conn_key)}" }}',
        "[[issuers]]",
        f"issuer = {json.dumps(issuer)}",
        'audience = "edgetds"',
        "[limits]",
        *(f"{k} = {v!r}" for k, v in limits.items()),
    ]
    path = workdir / "relay.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@asynccontextmanager
async def open_demo_stack(
    workdir: Path,
    *,
    connector: str = "inprocess",
    relay_kind: str = "python",
    pool_size: int = 16,
    relay_limits: dict[str, Any] | None = None,
    db: str = ":memory:",
    seed: str | None = None,
    tds_process: bool = False,
    replicas: int = 1,
    **connector_options: Any,
) -> AsyncIterator[DemoStack]:
    """Run the stack until the block exits.

    Args:
        connector: "inprocess" | "subprocess" (``edgetds connector run``) | "none".
        relay_kind: "python" (in this process) | "python-process" (``edgetds relay serve``, its
            own process) | "worker" (workerd; needs node_modules).
        pool_size: the connector's python-tds pool per login.
        relay_limits: relay [limits] overrides (the Python relay's rate limiter is off).
        seed: tdslite seed ("sample" adds the demo schema; slow to load).
        tds_process: run tdslite as its own process (benchmarks: the client's GIL is its own).
        replicas: with connector="subprocess", run this many replicas of the connector
            (``edgetds connector run --replica N``, one config and connector id)."""
    users = _prepare(workdir)
    idp_dir = workdir / "idp"
    async with (
        _open_tdslite(users, db=db, seed=seed, process=tds_process) as (
            tds_host,
            tds_port,
            tds_pid,
        ),
        open_dev_idp(key_dir=idp_dir) as idp,
        _start_relay(relay_kind, idp.issuer, relay_limits, workdir) as (relay, relay_pid),
    ):
        database = await trio.to_thread.run_sync(_setup, tds_host, tds_port)
        config = write_conn1_config(
            workdir,
            relay,
            idp,
            db_host=tds_host,
            db_port=tds_port,
            database=database,
            audit=False,
            **connector_options,
        )
        if pool_size != 16:
            _set_pool_size(config, pool_size)
        direct = DirectSpec(tds_host, tds_port, "reader", "reader-pw", database)

        def stack(*processes: trio.Process) -> DemoStack:
            first = processes[0] if processes else None
            return DemoStack(
                relay, idp, idp_dir, direct, config, first, tds_pid, relay_pid, processes
            )

        if connector == "none":
            yield stack()
        elif connector == "inprocess":
            async with open_connector(load_config(config)) as conn:
                await conn.wait_ready()
                await wait_connected(relay, idp)
                yield stack()
        else:
            async with trio.open_nursery() as nursery:
                cmd = [sys.executable, "-m", "edgetds", "connector", "run", "--config", str(config)]
                processes: list[trio.Process] = []
                logs = []
                try:
                    for n in range(1, replicas + 1):
                        name = "connector.log" if replicas == 1 else f"connector-{n}.log"
                        logs.append(open(workdir / name, "wb"))  # noqa: SIM115, ASYNC230
                        replica = ["--replica", str(n)] if replicas > 1 else []
                        run = partial(trio.run_process, [*cmd, *replica], check=False)
                        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
                        processes.append(
                            await nursery.start(
                                partial(run, stdout=subprocess.DEVNULL, stderr=logs[-1], env=env)
                            )
                        )
                    links = connector_options.get("ha_connections", 2) * replicas
                    await wait_connected(relay, idp, timeout_s=30, connections=links)
                    yield stack(*processes)
                finally:
                    await stop_processes(processes, logs, grace_s=10)
