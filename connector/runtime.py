"""The connector process: HA connections to the relay(s), reconnects, drain; and how to start it.

In process (tests, the demo)::

    async with open_connector(load_config("connector.toml")) as connector:
        await connector.wait_ready()          # at least one connection verified HELLO and is READY
        ...
    # leaving the block drains (DRAIN, in-flight queries finish up to drain_grace_s) and closes

From the shell: ``edgetds connector run --config connector.toml`` (SIGTERM/SIGINT drain; a
second signal exits at once).

HA: ``ha_connections`` slots each keep one connection up, to the relay URLs in turn. The first
slot dials alone; the others start once it is ready (or failed), ``stagger_s`` apart. A slot whose
connection ends reconnects with full-jitter backoff (connector/backoff.py), at once when the relay
asked (DRAIN/GOAWAY); on a relay DRAIN the replacement is dialled while the old connection
finishes its in-flight queries.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from connector.audit import AuditError, AuditLog
from connector.backoff import Backoff
from connector.checkpoints import AuditCheckpoints
from connector.config import ConfigError, ConnectorConfig, Problem, for_replica, load_config
from connector.ops import Ops, database_probe, watch_logins
from connector.policy import Policy, PolicyError
from connector.pool import Pools
from connector.service import QueryService
from connector.tunnel import DialFailed, LinkStats, RelayRejected, TunnelLink
from identity.keys import key_id, parse_public_key
from identity.oidc import TokenVerifier
from protocol import CHECKPOINT_CAP, SESSION_CAP, SessionEnd, raw_public_key

__all__ = [
    "Connector",
    "ConnectorStats",
    "build_policy",
    "build_verifier",
    "check_config",
    "connector_private_key",
    "open_connector",
    "pinned_relay_keys",
]

log = logging.getLogger("edgetds.connector")


@dataclass(frozen=True)
class ConnectorStats:
    connector_id: str
    ready_links: int
    links: tuple[LinkStats, ...]
    in_flight: int
    outcomes: dict[str, int]
    reconnects: int
    draining: bool


def build_verifier(config: ConnectorConfig) -> TokenVerifier:
    """The end-user token verifier from [identity] / [[issuers]]."""
    return TokenVerifier.from_config(config.identity, base_dir=config.path.parent)


def build_policy(config: ConnectorConfig) -> Policy:
    """The policy from [policy] file = ... or inline [policy] tables; checks its logins exist."""
    if config.policy_path is not None:
        policy = Policy.from_dict(config.policy, source=str(config.policy_path))
    else:
        policy = Policy.from_dict(config.policy, source=str(config.path), prefix="policy.")
    missing = sorted(policy.logins() - set(config.database.logins))
    if missing:
        raise ValueError(
            f"{config.path}: the policy names login(s) {missing} with no [logins.NAME] table "
            "(user + password_file or password_env)"
        )
    return policy


def check_config(path: str | os.PathLike[str], *, replica: int | None = None) -> ConnectorConfig:
    """Read and validate a connector config as start-up uses it: the one check `connector run`,
    `connector check` and SIGHUP share, so a reload refuses exactly what start-up refuses.
    With ``replica`` the config is that replica's (`connector.config.for_replica`).

    The file (connector/config.py), then what start-up builds from it: the policy and the logins
    it names, the token verifier (nothing is fetched: its HTTP client connects on the first key
    fetch), the connector key and the tail of an existing [audit] file.

    Raises:
        ConfigError: listing every problem.
    """
    config = load_config(path)
    problems: list[Problem] = []
    file = str(config.path)
    if replica is not None:
        try:
            config = for_replica(config, replica)
        except ValueError as exc:
            raise ConfigError([Problem(file, "", str(exc))]) from None
    try:
        build_policy(config)
    except PolicyError as exc:
        source = str(config.policy_path or config.path)
        problems += [Problem(source, "", p.removeprefix(f"{source}: ")) for p in exc.problems]
    except ValueError as exc:
        problems.append(Problem(file, "", str(exc).removeprefix(f"{file}: ")))
    try:
        build_verifier(config)
    except ValueError as exc:
        problems.append(Problem(file, "", f"[identity]/[[issuers]]: {exc}"))
    try:
        connector_private_key(config)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        problems.append(Problem(file, "connector", f"the connector private key: {exc}"))
    if config.audit_file is not None:
        unwritable = _unwritable(config.audit_file)
        if unwritable:
            problems.append(
                Problem(file, "audit.file", f"cannot write the audit log: {unwritable}")
            )
        elif config.audit_file.exists():
            try:  # the chain's tail must continue, as open_connector checks it (nothing written)
                AuditLog(config.audit_file).close()
            except (AuditError, OSError) as exc:
                problems.append(Problem(file, "audit.file", str(exc)))
    if problems:
        raise ConfigError(problems)
    return config


def _unwritable(path: Path) -> str | None:
    """Why the connector could not append to ``path`` and rotate it beside itself, or None.

    Asks the kernel (access(2)), so a read-only mount such as systemd's ProtectSystem=strict
    counts, also for root; nothing is created."""
    directory = path.parent
    if not directory.is_dir():
        return (
            f"directory {directory} does not exist: create it (the systemd unit's "
            "StateDirectory=edgetds creates /var/lib/edgetds)"
        )
    for target, mode in ((path, os.W_OK), (directory, os.W_OK | os.X_OK)):
        if target is path and not path.exists():
            continue
        if os.access(target, mode):
            continue
        if os.statvfs(target).f_flag & os.ST_RDONLY:
            return (
                f"{target} is on a read-only file system (systemd's ProtectSystem=strict makes "
                "/etc and /usr read-only: keep the audit log under the unit's StateDirectory, "
                'e.g. [audit] file = "/var/lib/edgetds/audit.jsonl")'
            )
        return f"{target} is not writable by this user (uid {os.getuid()})"
    return None


def pinned_relay_keys(config: ConnectorConfig) -> dict[str, Ed25519PublicKey]:
    """The relay public keys the connector pins (``relay_public_keys``), by key id."""
    return {key_id(k): parse_public_key(k) for k in config.tunnel.relay_public_keys}


def connector_private_key(config: ConnectorConfig) -> Ed25519PrivateKey:
    """The connector's Ed25519 signing key from its configuration.

    Raises:
        ValueError: the key is not an Ed25519 key.
    """
    key = serialization.load_pem_private_key(config.tunnel.private_key_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the connector private key must be an Ed25519 key (edgetds keygen)")
    return key


class Connector:
    """A running connector; create with `open_connector`."""

    def __init__(self, config: ConnectorConfig, service: QueryService) -> None:
        self.config = config
        self.service = service
        self._key = connector_private_key(config)
        self._relay_keys = pinned_relay_keys(config)
        self._links: set[TunnelLink] = set()
        self._ready_changed = trio.Event()
        self._first_attempt = trio.Event()
        self._stopping = False
        self.draining = False
        self.reconnects = 0
        #: reconnects made at once because the relay asked (DRAIN/GOAWAY), without backoff
        self.immediate_reconnects = 0
        self._nursery: trio.Nursery | None = None
        self._stopped = trio.Event()
        #: metrics and readiness (connector/ops.py); served when [ops] listen is set
        self.ops = Ops(connector_id=config.tunnel.connector_id, tunnel=config.tunnel.tunnel)
        self.ops_server: Any = None  # `OpsServer` (its URL) while serving
        service.ops = self.ops
        #: signed audit checkpoints to the relays (connector/checkpoints.py); None without audit
        self.checkpoints: AuditCheckpoints | None = None
        if service.audit is not None:
            self.checkpoints = AuditCheckpoints(
                service.audit,
                key=lambda: self._key,
                connector_id=config.tunnel.connector_id,
                tunnel=config.tunnel.tunnel,
                every_records=config.audit_checkpoint_every_records,
                interval_s=config.audit_checkpoint_interval_s,
            )

    # -- observation -----------------------------------------------------------------------

    @property
    def ready_links(self) -> int:
        return sum(1 for link in self._links if link.ready and not link.closed)

    async def wait_ready(self, count: int = 1) -> None:
        """Wait until at least `count` connections are READY."""
        while self.ready_links < count:
            await self._ready_changed.wait()

    async def wait_changed(self) -> None:
        """Return at the next change `statistics()` shows: a connection became READY or ended,
        a slot is about to redial, or draining started. Re-read the statistics after it returns."""
        await self._ready_changed.wait()

    def _on_link_ready(self, first_slot: bool, link: TunnelLink) -> None:
        if first_slot:
            self._first_attempt.set()  # the other slots may start now
        if self.checkpoints is not None and self._nursery is not None:
            # a relay that restarted without keeping checkpoints learns the head at once
            self._nursery.start_soon(link.send_checkpoint, self.checkpoints.make())
        self._notify()

    async def _send_checkpoint(self, fields: dict[str, Any]) -> None:
        """Hand one signed checkpoint to every READY connection."""
        for link in list(self._links):
            await link.send_checkpoint(fields)

    async def rotate_audit(self) -> None:
        """SIGHUP: rotate the audit file (the chain continues in a new one)."""
        audit = self.service.audit
        if audit is None:
            return
        try:
            rotated = await audit.rotate_async()
        except (OSError, AuditError) as exc:
            log.error("SIGHUP: audit log not rotated: %s", exc)
            return
        if rotated is not None:
            log.info("SIGHUP: audit log rotated", extra={"rotated_to": str(rotated)})

    def _notify(self) -> None:
        self._ready_changed.set()
        self._ready_changed = trio.Event()

    def statistics(self) -> ConnectorStats:
        return ConnectorStats(
            connector_id=self.config.tunnel.connector_id,
            ready_links=self.ready_links,
            links=tuple(link.statistics() for link in self._links),
            in_flight=self.service.in_flight,
            outcomes=dict(self.service.counts),
            reconnects=self.reconnects,
            draining=self.draining,
        )

    # -- the HA slots ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep `ha_connections` connections up until `shutdown()`."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for index in range(self.config.tunnel.ha_connections):
                    nursery.start_soon(self._slot, index, nursery)
                if self.checkpoints is not None:
                    nursery.start_soon(self.checkpoints.run, self._send_checkpoint)
                task_status.started()
        finally:
            self._stopped.set()

    async def wait_stopped(self) -> None:
        """Wait until the connector stopped (after `shutdown()` or `abort()`)."""
        await self._stopped.wait()

    def start_shutdown(self) -> None:
        """Begin `shutdown()` in the background (e.g. from a signal handler loop)."""
        if self._nursery is not None and not self.draining:
            self._nursery.start_soon(self.shutdown)

    async def _slot(self, index: int, nursery: trio.Nursery) -> None:
        cfg = self.config.tunnel
        if index > 0:
            await self._first_attempt.wait()
            await trio.sleep(index * cfg.stagger_s)
        backoff = Backoff(cfg.backoff_base_s, cfg.backoff_cap_s, cfg.stable_after_s)
        attempt = 0
        while not self._stopping:
            url = cfg.relay_urls[(index + attempt) % len(cfg.relay_urls)]
            attempt += 1
            replace = trio.Event()
            ended = trio.Event()
            result: dict[str, Any] = {}
            link = TunnelLink(
                cfg,
                url,
                private_key=self._key,
                relay_keys=self._relay_keys,
                handler=self.service,
                on_ready=functools.partial(self._on_link_ready, index == 0),
                on_relay_drain=functools.partial(_set_event, replace),
                caps=(SESSION_CAP, CHECKPOINT_CAP)
                if self.checkpoints is not None
                else (SESSION_CAP,),
                max_statement_bytes=self.service.policy.max_statement_bytes,
            )
            link.ops = self.ops
            nursery.start_soon(self._run_link, link, result, ended)
            with trio.CancelScope() as wait_scope:
                async with trio.open_nursery() as waiters:
                    waiters.start_soon(_set_then_cancel, ended, wait_scope)
                    waiters.start_soon(_set_then_cancel, replace, wait_scope)
            if index == 0:
                self._first_attempt.set()
            if self._stopping:
                return
            self.reconnects += 1
            self._notify()
            end = result.get("end")
            self.ops.reconnect(end.reason if end is not None else result.get("error", "dial"))
            if replace.is_set() or (end is not None and end.relay_requested):
                backoff.connection_ended(end.uptime_s if end is not None else cfg.stable_after_s)
                log.info("reconnecting at once (relay asked)", extra={"slot": index})
                self.immediate_reconnects += 1
                continue
            if end is not None:
                backoff.connection_ended(end.uptime_s)
            delay = backoff.next_delay()
            self.ops.backoff_scheduled(delay)
            log.info(
                "reconnecting",
                extra={"slot": index, "delay_s": round(delay, 3), "failures": backoff.failures},
            )
            await trio.sleep(delay)

    async def _run_link(self, link: TunnelLink, result: dict[str, Any], ended: trio.Event) -> None:
        self._links.add(link)
        try:
            end = result["end"] = await link.run()
            log.info(
                "connection ended",
                extra={
                    "relay": link.base_url,
                    "reason": end.reason,
                    "uptime_s": round(end.uptime_s, 3),
                    "served": end.served,
                },
            )
        except DialFailed as exc:
            result["error"] = "auth_failed" if exc.auth else "dial_failed"
            level = logging.ERROR if exc.auth else logging.WARNING
            log.log(level, "%s", exc)
        except RelayRejected as exc:
            result["error"] = "relay_rejected"
            log.error("%s", exc)
        except trio.Cancelled:  # the connector stops at once: still say the connection ended
            log.info(
                "connection ended",
                extra={"relay": link.base_url, "reason": "cancelled", "served": link.served},
            )
            raise
        finally:
            self._links.discard(link)
            self.service.sessions.connection_ended(link)  # its sessions roll back
            self._notify()
            ended.set()

    # -- shutdown --------------------------------------------------------------------------

    async def shutdown(self, *, grace_s: float | None = None) -> None:
        """Drain: DRAIN to the relay, in-flight queries finish up to grace_s, then close."""
        if self._stopped.is_set():
            return
        grace = self.config.tunnel.drain_grace_s if grace_s is None else grace_s
        self._stopping = True
        self.draining = True
        self._notify()
        self.ops.set_draining()
        self.service.sessions.draining = True  # begin is refused from now on
        links = list(self._links)
        for link in links:
            await link.drain()
        with trio.move_on_after(grace) as scope:
            for link in links:
                await link.settle()
        if scope.cancelled_caught:
            log.warning("drain grace period over; closing with queries in flight")
        # no session op can arrive after the DRAIN (the relay sends no QUERY): roll back the rest
        await self.service.sessions.end_all(SessionEnd.CONNECTOR_DRAINING)
        if self.checkpoints is not None:  # the last word on the audit head, after the last query
            await self.checkpoints.send_now(self._send_checkpoint)
        for link in links:
            await link.close("connector shut down")
        # each connection's task logs its end once its WebSocket closed: let them, then stop
        with trio.move_on_after(self.config.tunnel.dead_peer_after_s):
            while self._links.intersection(links):
                await self.wait_changed()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def reload_keys(self, config: ConnectorConfig) -> dict[str, Any]:
        """Take the connector key and relay pins of a re-read config (SIGHUP), live.

        New connections use the new connector key and pins. When the connector key changed, every
        connection is replaced, make before break (a new one is dialed and READY before the old
        one drains; in-flight queries finish), so the relay's old key can be removed next without
        a failed query; otherwise only connections whose relay HELLO was signed by a key that is
        no longer pinned are replaced. Other settings need a restart; their names are in the
        summary's ``restart_needed``.
        """
        new_t, old_t = config.tunnel, self.config.tunnel
        restart_needed = [
            name
            for name in ("connector_id", "tunnel", "relay_urls", "ha_connections")
            if getattr(new_t, name) != getattr(old_t, name)
        ]
        restart_needed += [
            name
            for name in ("database", "identity", "policy", "audit_file", "ops_listen")
            if getattr(config, name) != getattr(self.config, name)
        ]
        new_key = connector_private_key(config)
        key_changed = raw_public_key(new_key) != raw_public_key(self._key)
        self._key = new_key
        self._relay_keys = pinned_relay_keys(config)
        up = [link for link in self._links if link.ready and not link.closed]
        replaced = [link for link in up if key_changed or link.relay_key_id not in self._relay_keys]
        if self._nursery is not None:
            for link in replaced:
                reason = (
                    "the connector key changed"
                    if key_changed
                    else "its relay key is no longer pinned"
                )
                self._nursery.start_soon(self._replace_link, link, set(up), reason)
        return {
            "key_id": key_id(self._key),
            "key_changed": key_changed,
            "relay_keys_pinned": len(self._relay_keys),
            "replaced_connections": len(replaced),
            "restart_needed": restart_needed,
        }

    async def _replace_link(self, link: TunnelLink, old: set[TunnelLink], reason: str) -> None:
        """Make before break: dial a replacement, wait until a new connection is READY (up to
        drain_grace_s), then DRAIN this one, let its in-flight queries finish and close it."""
        grace = self.config.tunnel.drain_grace_s
        link.request_replacement()
        with trio.move_on_after(grace):
            while not any(n.ready and not n.closed and n not in old for n in self._links):
                await self._ready_changed.wait()
        log.info("replacing a connection: %s", reason, extra={"relay": link.base_url})
        await link.drain(reason)
        with trio.move_on_after(grace):
            await link.settle()
        await link.close(reason)

    def abort(self) -> None:
        """Exit at once (second signal): cut running statements, close everything."""
        self._stopping = True
        self.service.pools.interrupt_all()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()


def _set_event(event: trio.Event, _link: TunnelLink) -> None:
    event.set()


async def _set_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


@asynccontextmanager
async def open_connector(
    config: ConnectorConfig,
    *,
    audit: AuditLog | None = None,
    verifier: TokenVerifier | None = None,
) -> AsyncIterator[Connector]:
    """Start a connector in the current trio run; leaving the block drains and stops it.

    Args:
        config: a loaded `ConnectorConfig`.
        audit: the hash-chained audit log (default: one on the config's [audit] file, if set).
        verifier: a token verifier (default: built from the config's issuers).
    """
    policy = build_policy(config)
    own_verifier = verifier is None
    verifier = verifier or build_verifier(config)
    # python-tds's own per-read timeout is only a safety net above the longest role timeout
    longest_ms = max((role.timeout_ms for role in policy.roles), default=30_000)
    pools = Pools(config.database, query_timeout_s=longest_ms / 1000)
    own_audit = audit is None and config.audit_file is not None
    if own_audit:
        assert config.audit_file is not None
        audit = AuditLog(config.audit_file, rotate_bytes=config.audit_rotate_bytes)
    service = QueryService(
        relay_keys=pinned_relay_keys(config),
        verifier=verifier,
        policy=policy,
        pools=pools,
        max_concurrent=config.tunnel.max_concurrent_queries,
        audit=audit,
        fetch_rows=config.database.fetch_rows,
        sessions=config.sessions,
    )
    connector = Connector(config, service)
    connector.ops.observe_links(lambda: connector.statistics().links)
    connector.ops.observe_pools(pools.statistics)
    service.sessions.ops = connector.ops
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(service.sessions.run)
            if config.ops_listen:  # /metrics, /healthz, /ready (connector/ops.py)
                connector.ops_server = await nursery.start(
                    partial(connector.ops.serve_forever, ready_check=database_probe(pools)),
                    config.ops_listen,
                )
            # every login is checked (each bounded by login_timeout_s) before the relay is
            # dialled: a failing one is logged and in the status from the first moment on
            await nursery.start(
                partial(
                    watch_logins,
                    pools,
                    connector.ops,
                    interval_s=config.database.login_check_interval_s,
                )
            )
            await nursery.start(connector.run)
            try:
                yield connector
            finally:
                with trio.CancelScope(shield=True):
                    await connector.shutdown()
                nursery.cancel_scope.cancel()  # the ops server
    finally:
        with trio.CancelScope(shield=True):
            await pools.aclose()
            await service.read_only.aclose()  # the read-only check's worker processes
            if own_verifier:
                await verifier.aclose()
            if own_audit and audit is not None:
                await audit.aclose()
