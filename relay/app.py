"""The relay as one ASGI application: routing, the connector upgrade, status, stats, health.

Routes (one port)::

    GET  /healthz                          liveness: 200 {"status": "ok"}
    GET  /v1/relay/stats                   refusal counters and tunnels (loopback or stats token)
    WS   /v1/tunnels/{tunnel}/connect      connector WebSocket (subprotocol edgetds.v1)
    POST /v1/tunnels/{tunnel}/query        client query (relay/query.py)
    GET  /v1/tunnels/{tunnel}/status       {"tunnel", "connectors", "connections"} (client token)
    GET  /v1/tunnels/{tunnel}/audit/checkpoint?connector=ID[&file=NAME]
                                           a connector's latest signed audit checkpoint of an
                                           audit file (audit token; relay/checkpoints.py,
                                           SPEC.md 11.3)
    POST /v1/tunnels/{tunnel}/enroll       enrol a connector key with a one-time token (no
                                           Authorization; relay/enrollment.py, SPEC.md 8.7)

Anything else is answered 404 (`request.invalid`, counted as `http.not_found`) before any token
is looked at, so scans cost nothing but a counter. Refusals of every kind are counted by error
code (`RefusalCounters`), as the Worker relay does. Browsers: every path under a tunnel except
connect, enroll and audit/checkpoint answers CORS for the tunnel's `cors_origins`, and its
preflights are answered here (relay/cors.py, SPEC.md 11.7).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import json
import logging
import time
import urllib.parse
import uuid
from collections.abc import MutableMapping
from typing import Any

import trio

from asgiapp import answer_lifespan
from asgiapp.server import SEND_NOW
from identity.keys import encode_public_key, key_id
from identity.oidc import Identity, TokenError, TokenVerifier, bearer_token
from protocol import (
    SUBPROTOCOL,
    TOKEN_LEEWAY,
    TOKEN_MAX_LIFETIME,
    AuthError,
    ErrorCode,
    Limits,
    ReplayCache,
    check_enroll_request,
    events,
    sign_enrolled,
    verify_connector_token,
)
from relay import cors
from relay.checkpoints import CheckpointStore, checkpoint_files_conflict
from relay.config import ConfigError, RelayConfig
from relay.enrollment import EnrollmentStore, with_enrolled
from relay.http import HttpError, Receive, Send, header, read_body, send_error, send_json
from relay.limits import RateLimiter, RefusalCounters, retry_after_header
from relay.logs import log_event
from relay.query import handle_query
from relay.registry import Registry, RouteRefused
from relay.session import ConnectorSession, HandshakeFailed, WebSocketIO
from relay.sessions import OPS as SESSION_OPS
from relay.sessions import SessionRequest, SessionTable, handle_session, handle_transaction

__all__ = ["RelayApp"]

Scope = MutableMapping[str, Any]

_TUNNEL_ACTIONS = {"connect", "query", "status", "sessions", "transaction", "enroll"}
#: the method each HTTP route answers (GET routes answer HEAD too)
_METHODS = {
    "healthz": "GET",
    "stats": "GET",
    "status": "GET",
    "query": "POST",
    "checkpoint": "GET",
    "sessions": "POST",
    "transaction": "POST",
    "enroll": "POST",
}


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _http_error(refusal: RouteRefused) -> HttpError:
    """The HTTP answer to a query the registry could not route (the status of its code)."""
    return HttpError(
        refusal.code,
        refusal.message,
        hint=refusal.hint,
        retry_after=refusal.retry_after,
        limit=refusal.limit,
    )


class RelayApp:
    """The ASGI app. Build it with a `RelayConfig` and an open `TokenVerifier`."""

    def __init__(
        self,
        config: RelayConfig,
        verifier: TokenVerifier,
        *,
        protocol_limits: Limits | None = None,
    ) -> None:
        self.config = config
        self.verifier = verifier
        self.protocol_limits = protocol_limits or Limits()
        self.relay_key_id = key_id(config.private_key)
        self.relay_public_key = encode_public_key(config.private_key)
        limits = config.limits
        #: keys enrolled with one-time tokens (SPEC.md 8.7); None: enrolment is off
        self.enrollments = (
            EnrollmentStore(config.enrollment_file) if config.enrollment_file else None
        )
        #: one enrolment at a time: its token is checked and consumed under this lock
        self.enroll_lock = trio.Lock()
        self.registry = Registry.from_config(
            with_enrolled(config.tunnels, self.enrollments), query_id_ttl_s=limits.query_id_ttl_s
        )
        self.auth_failures = RateLimiter(
            rate=limits.auth_failures_per_second,
            burst=limits.auth_failure_burst,
            max_keys=limits.max_tracked_keys,
        )
        self.query_rate = RateLimiter(
            rate=limits.queries_per_second,
            burst=limits.query_burst,
            max_keys=limits.max_tracked_keys,
        )
        self.counters = RefusalCounters()
        self.jti_cache = ReplayCache(TOKEN_MAX_LIFETIME + 2 * TOKEN_LEEWAY)
        self.started = time.time()
        #: Set by `drain_all` (shutdown): new connector connections are refused.
        self.shutting_down = False
        #: connectors' latest signed audit checkpoints (SPEC.md 5.2)
        self.checkpoints = CheckpointStore(config.checkpoint_file)
        #: sessions: transactions across requests (SPEC.md 11.5, relay/sessions.py)
        self.sessions = SessionTable()

    # -- ASGI entry ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await answer_lifespan(receive, send)
            return
        preflight = False
        if kind == "http" and cors.client_endpoint(scope["path"]) is not None:
            preflight = cors.is_preflight(scope)
            origin = self.cors_origin(scope) if not preflight else None
            if origin is not None:
                send = cors.with_cors(send, origin)
        try:
            if preflight:
                await self._preflight(scope, send)
            elif kind == "http":
                await self._http(scope, receive, send)
            elif kind == "websocket":
                await self._websocket(scope, receive, send)
        except (HttpError, RouteRefused) as refusal:
            exc = refusal if isinstance(refusal, HttpError) else _http_error(refusal)
            self.counters.refuse(exc.reason)
            if kind == "http":
                await send_error(send, exc)
            else:
                await self._deny(send, exc)

    @staticmethod
    def _route(path: str) -> tuple[str, str | None]:
        """(route name, tunnel): route is healthz, stats, connect, query, status or unknown."""
        if path == "/healthz":
            return "healthz", None
        if path == "/v1/relay/stats":
            return "stats", None
        parts = path.split("/")
        if (
            len(parts) == 6
            and parts[4:] == ["audit", "checkpoint"]
            and parts[:3] == ["", "v1", "tunnels"]
        ):
            return ("checkpoint", parts[3]) if 0 < len(parts[3]) <= 128 else ("unknown", None)
        # "", "v1", "tunnels", NAME, ACTION
        if (
            len(parts) == 5
            and parts[:3] == ["", "v1", "tunnels"]
            and parts[4] in _TUNNEL_ACTIONS
            and 0 < len(parts[3]) <= 128
        ):
            return parts[4], parts[3]
        return "unknown", None

    def client_host(self, scope: Scope) -> str:
        client = scope.get("client")
        return str(client[0]) if client else "unknown"

    def limit_key(self, scope: Scope) -> str:
        """The failed-auth rate-limit key: the client address, or its /64 for IPv6 (one host
        usually owns a whole /64, so rotating addresses inside it must not reset the limit)."""
        host = self.client_host(scope)
        if ":" not in host:  # IPv4 (or not an address): the host itself
            return host
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host
        if address.version == 6 and not address.is_loopback:
            return str(ipaddress.ip_network(f"{host}/64", strict=False))
        return host

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await self._session_path(scope, receive, send):
            return
        route, tunnel = self._route(scope["path"])
        method = scope["method"]
        allowed = _METHODS
        if route == "unknown":
            raise HttpError(
                ErrorCode.REQUEST_INVALID,
                "unknown path; the API is under /v1/tunnels/{tunnel}/",
                status=404,
                reason="http.not_found",
            )
        if route == "connect":
            raise HttpError(
                ErrorCode.REQUEST_INVALID,
                f"{scope['path']} is the connector WebSocket endpoint; upgrade with "
                f"Sec-WebSocket-Protocol: {SUBPROTOCOL}",
                status=426,
            )
        if method != allowed[route] and not (method == "HEAD" and allowed[route] == "GET"):
            raise HttpError(
                ErrorCode.REQUEST_INVALID,
                f"use {allowed[route]} for this path, not {method}",
                status=405,
                headers=[(b"allow", allowed[route].encode("ascii"))],
            )
        if route == "healthz":
            await send_json(send, 200, b'{"status":"ok"}\n')
        elif route == "stats":
            await self._stats(scope, send)
        elif route == "status":
            assert tunnel is not None
            found = self.registry.get(tunnel)
            await self.authenticate(scope)
            await send_json(send, 200, _json(found.status()))
        elif route == "checkpoint":
            assert tunnel is not None
            await self._checkpoint(scope, send, tunnel)
        elif route == "enroll":
            assert tunnel is not None
            await self._enroll(scope, receive, send, tunnel)
        elif route in ("sessions", "transaction"):
            assert tunnel is not None
            await self._session_request(scope, receive, send, tunnel, None, route)
        else:
            assert tunnel is not None
            started = trio.current_time()
            found = self.registry.get(tunnel)
            identity, token = await self.authenticate(scope)
            self.check_query_rate(identity)
            await handle_query(
                scope,
                receive,
                send,
                tunnel=found,
                identity=identity,
                token=token,
                limits=self.config.limits,
                counters=self.counters,
                started=started,
            )

    async def _session_path(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """``/v1/tunnels/{t}/sessions/{id}`` (DELETE) and ``.../sessions/{id}/{op}`` (POST);
        False for any other path."""
        parts = scope["path"].split("/")
        if not (
            len(parts) in (6, 7)
            and parts[:3] == ["", "v1", "tunnels"]
            and parts[4] == "sessions"
            and 0 < len(parts[3]) <= 128
            and 0 < len(parts[5]) <= 64
        ):
            return False
        op = parts[6] if len(parts) == 7 else "rollback"
        wanted = "POST" if len(parts) == 7 else "DELETE"
        if op not in SESSION_OPS:
            raise HttpError(
                ErrorCode.REQUEST_INVALID,
                "unknown session operation; use query, commit, rollback, savepoint or rollback_to",
                status=404,
                reason="http.not_found",
            )
        if scope["method"] != wanted:
            raise HttpError(
                ErrorCode.REQUEST_INVALID,
                f"use {wanted} for this path, not {scope['method']}",
                status=405,
                headers=[(b"allow", wanted.encode("ascii"))],
            )
        await self._session_request(scope, receive, send, parts[3], parts[5], op)
        return True

    async def _session_request(
        self, scope: Scope, receive: Receive, send: Send, tunnel: str, sid: str | None, op: str
    ) -> None:
        started = trio.current_time()
        found = self.registry.get(tunnel)
        identity, token = await self.authenticate(scope)
        self.check_query_rate(identity)
        ctx = SessionRequest(
            self.sessions, found, identity, token, self.config.limits, self.counters, started
        )
        if op == "transaction":
            await handle_transaction(scope, receive, send, ctx)
        else:
            await handle_session(scope, receive, send, ctx, sid=sid, op=op)

    # -- browsers (CORS, SPEC.md 11.7; relay/cors.py) ----------------------------------------

    def cors_origin(self, scope: Scope) -> str | None:
        """The request's Origin if it calls a client endpoint of a tunnel that lists it."""
        name = cors.client_endpoint(scope["path"])
        tunnel = self.config.tunnels.get(name) if name is not None else None
        if tunnel is None or not tunnel.cors_origins:  # no header scan for non-browser tunnels
            return None
        origin = header(scope, b"origin")
        return origin if origin in tunnel.cors_origins else None

    async def _preflight(self, scope: Scope, send: Send) -> None:
        """Answer a browser's preflight here: no token, no connector (204, or 403 unlisted)."""
        origin = self.cors_origin(scope)
        if origin is None:
            raise HttpError(
                ErrorCode.REQUEST_INVALID,
                "this origin may not call the tunnel from a browser: it is not in the tunnel's "
                "cors_origins (add it there, exactly as scheme://host[:port], to allow it)",
                status=403,
                reason="cors.refused",
            )
        headers = cors.preflight_headers(origin)
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # -- authentication and limits ------------------------------------------------------------

    def check_auth_rate(self, scope: Scope) -> None:
        """Refuse (429, no work done) an address that failed authentication too often."""
        wait = self.auth_failures.retry_after(self.limit_key(scope), trio.current_time())
        if wait > 0:
            raise HttpError(
                ErrorCode.LIMITS_RATE_LIMITED,
                "too many failed authentications from this address; slow down",
                retry_after=retry_after_header(wait),
            )

    def auth_failed(self, scope: Scope, code: ErrorCode, message: str) -> HttpError:
        """Count a failed authentication against the client address; the error to answer."""
        self.auth_failures.spend(self.limit_key(scope), trio.current_time())
        log_event("auth.refused", level=logging.WARNING, peer=self.client_host(scope), code=code)
        return HttpError(code, message)

    async def authenticate(self, scope: Scope) -> tuple[Identity, str]:
        """Verify the client's bearer token, after the failed-auth rate check.

        When the issuer's keys cannot be loaded (code ``internal``) the client is told only that;
        the cause (the JWKS URL or file, the network's or TLS's answer) is logged under a fresh
        query id that the answer names.
        """
        self.check_auth_rate(scope)
        try:
            token = bearer_token(header(scope, b"authorization"))
            return await self.verifier.verify(token), token
        except TokenError as exc:
            if exc.code.startswith("auth."):
                raise self.auth_failed(scope, exc.code, exc.message) from None
            query_id = str(uuid.uuid4())
            log_event(
                "auth.keys_unavailable", level=logging.ERROR, query_id=query_id, why=exc.message
            )
            error = self.auth_failed(
                scope,
                exc.code,
                "the relay could not verify the token: the identity provider's keys are "
                f"unavailable; retry later (the cause is in the relay's log under query_id "
                f"{query_id})",
            )
            error.query_id = query_id
            error.status = 503  # the identity provider's, not ours: retry later (as the Worker)
            raise error from None

    def check_query_rate(self, identity: Identity) -> None:
        key = f"{identity.issuer}\n{identity.subject}"
        wait = self.query_rate.spend(key, trio.current_time())
        if wait > 0:
            raise HttpError(
                ErrorCode.LIMITS_RATE_LIMITED,
                "too many queries for this identity; slow down",
                retry_after=retry_after_header(wait),
            )

    # -- stats --------------------------------------------------------------------------------

    async def _stats(self, scope: Scope, send: Send) -> None:
        if not _is_loopback(self.client_host(scope)):
            self.check_auth_rate(scope)
            secret = header(scope, b"authorization") or ""
            scheme, _, token = secret.partition(" ")
            digest = hashlib.sha256(token.strip().encode("utf-8")).hexdigest()
            expected = self.config.stats_token_sha256
            if not (
                expected and scheme.lower() == "bearer" and hmac.compare_digest(digest, expected)
            ):
                raise self.auth_failed(
                    scope,
                    ErrorCode.AUTH_INVALID_TOKEN,
                    "stats are served to loopback clients, or with the stats bearer token",
                )
        await send_json(send, 200, _json(self.stats()))

    def stats(self) -> dict[str, Any]:
        return {
            **self.counters.snapshot(),
            "uptime_s": round(time.time() - self.started, 1),
            "relay_key_id": self.relay_key_id,
            "tracked": {
                "auth_failure_addresses": len(self.auth_failures),
                "query_identities": len(self.query_rate),
            },
            "sessions": self.sessions.statistics(),
            "enrolled_keys": self.enrollments.count() if self.enrollments is not None else None,
            "tunnels": {name: t.detail() for name, t in self.registry.tunnels.items()},
        }

    # -- audit checkpoints ------------------------------------------------------------------

    async def _checkpoint(self, scope: Scope, send: Send, tunnel_name: str) -> None:
        """GET .../audit/checkpoint?connector=ID[&file=NAME] with the audit token (SPEC.md 11.3):
        without ``file``, the connector's one file's, or 409 with the names of several."""
        self.check_auth_rate(scope)
        scheme, _, token = (header(scope, b"authorization") or "").partition(" ")
        digest = hashlib.sha256(token.strip().encode("utf-8")).hexdigest()
        expected = self.config.audit_token_sha256
        if not (expected and scheme.lower() == "bearer" and hmac.compare_digest(digest, expected)):
            raise self.auth_failed(
                scope,
                ErrorCode.AUTH_INVALID_TOKEN,
                "audit checkpoints are served with the relay's audit token (Authorization: "
                "Bearer <secret>, whose sha256 is [relay] audit_token_sha256)",
            )
        tunnel = self.registry.get(tunnel_name)
        query = urllib.parse.parse_qs(
            scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
        )
        connector_id = (query.get("connector") or [""])[0]
        if not connector_id:
            raise HttpError(
                ErrorCode.REQUEST_INVALID,
                "name the connector: ?connector=<connector id>",
                status=400,
            )
        files = self.checkpoints.files(tunnel.name, connector_id)
        file = query["file"][0] if "file" in query else (files[0] if len(files) == 1 else None)
        if file is None and files:
            body = checkpoint_files_conflict(connector_id, files)
            await send_json(send, 409, _json(body))
            return
        held = self.checkpoints.get(tunnel.name, connector_id, file or "")
        body = {
            "tunnel": tunnel.name,
            "connector_id": connector_id,
            "checkpoint": held["checkpoint"] if held else None,
            "received_at": held["received_at"] if held else None,
            "conflict": held.get("conflict") if held else None,
        }
        await send_json(send, 200, _json(body))

    # -- enrolment (SPEC.md 8.7) --------------------------------------------------------------

    async def _enroll(self, scope: Scope, receive: Receive, send: Send, tunnel: str) -> None:
        """POST .../enroll: check the one-time token and the proof, consume the token and record
        the key (durably, before answering), drain connections of a key it replaces."""
        store = self.enrollments
        if store is None:
            raise HttpError(
                ErrorCode.ENROLL_DISABLED,
                "this relay does not enrol connectors: its operator has to set [relay] "
                "enrollment_file (or list the connector's public key in the tunnel's connectors)",
            )
        self.check_auth_rate(scope)
        body = await read_body(scope, receive, limit=self.config.limits.max_body_bytes)
        async with self.enroll_lock:
            now = time.time()
            try:
                request = check_enroll_request(
                    body,
                    tunnel=tunnel,
                    relay_keys=[self.config.private_key.public_key()],
                    tunnels=self.registry.tunnels,
                    now=now,
                    consumed=store.consumed(tunnel, now=now),
                )
            except AuthError as exc:
                raise self.auth_failed(scope, exc.error_code, str(exc)) from None
            state, replaced = store.prepare(request, now=int(now))
            try:
                # shielded: a client that leaves mid-write must not leave the file holding an
                # enrolment this relay's memory does not (its token would be usable again)
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(store.write, state)
                    store.commit(state)
                    drained = self._apply_tunnels()
                    self.counters.count("enrollments")
                    log_event(
                        "connector.enrolled",
                        tunnel=request.claims.tunnel,
                        connector=request.claims.connector_id,
                        key_id=request.key_id,
                        replaced=replaced is not None,
                        drained=len(drained),
                        peer=self.client_host(scope),
                    )
            except OSError as exc:
                query_id = str(uuid.uuid4())
                log_event(
                    "enroll.write_failed",
                    level=logging.ERROR,
                    query_id=query_id,
                    file=store.path,
                    why=exc.strerror or exc,
                )
                raise HttpError(
                    ErrorCode.INTERNAL,
                    "the relay could not record the enrolment, nothing was enrolled and the "
                    "token is still unused; retry later (the cause is in the relay's log under "
                    f"query_id {query_id})",
                    query_id=query_id,
                ) from None
        await send_json(send, 200, _json(sign_enrolled(self.config.private_key, request)))

    def _apply_tunnels(self) -> list[ConnectorSession]:
        """Give the registry the static tunnels plus the enrolled keys; connections whose key is
        in neither any more are drained (and closed once their queries had their time)."""
        limits = self.config.limits
        drained = self.registry.reconfigure(
            with_enrolled(self.config.tunnels, self.enrollments),
            query_id_ttl_s=limits.query_id_ttl_s,
            # a revoked key's connection may finish what it runs, then it is closed
            close_after_s=(limits.query_timeout_ms + limits.deadline_grace_ms) / 1000,
        )
        for session in drained:
            session.log("connector.key_unregistered", level=logging.WARNING, action="drained")
        return drained

    def _on_checkpoint(self, session: ConnectorSession, event: events.Checkpoint) -> None:
        """A connector sent a CHECKPOINT: keep it if it verifies and does not go backwards."""
        tunnel = self.registry.tunnels.get(session.tunnel)
        keys = tunnel.config.connectors.get(session.connector_id, ()) if tunnel else ()
        outcome, why = self.checkpoints.offer(
            event.fields, keys, tunnel=session.tunnel, connector_id=session.connector_id
        )
        fields: dict[str, Any] = {"tunnel": session.tunnel, "connector": session.connector_id}
        if outcome == "stored":
            self.counters.count("audit_checkpoints")
            log_event("audit.checkpoint", **fields, file=event.fields["file"], seq=event.seq)
            return
        self.counters.refuse(f"audit.checkpoint_{outcome}")
        log_event(f"audit.checkpoint_{outcome}", level=logging.WARNING, **fields, why=why)

    # -- connector WebSocket ------------------------------------------------------------------

    async def _deny(self, send: Send, error: HttpError) -> None:
        """Refuse a WebSocket upgrade with an HTTP response and a JSON error body."""
        body = error.body()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
        ]
        if error.retry_after is not None:
            headers.append((b"retry-after", error.retry_after.encode("ascii")))
        await send(
            {"type": "websocket.http.response.start", "status": error.status, "headers": headers}
        )
        await send({"type": "websocket.http.response.body", "body": body})

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        route, tunnel_name = self._route(scope["path"])
        if route != "connect" or tunnel_name is None:
            raise HttpError(
                ErrorCode.REQUEST_INVALID,
                "unknown path; connectors dial /v1/tunnels/{tunnel}/connect",
                status=404,
                reason="http.not_found",
            )
        if SUBPROTOCOL not in scope.get("subprotocols", ()):
            raise HttpError(
                ErrorCode.REQUEST_INVALID,
                f"no common WebSocket subprotocol; offer Sec-WebSocket-Protocol: {SUBPROTOCOL}",
                status=426,
            )
        tunnel = self.registry.get(tunnel_name)
        if self.shutting_down:
            raise HttpError(
                ErrorCode.RELAY_OVERLOADED,
                "this relay is shutting down; connect to another relay or retry shortly",
                retry_after="5",
            )
        self.check_auth_rate(scope)
        token = header(scope, b"authorization") or ""
        scheme, _, token = token.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise self.auth_failed(
                scope,
                ErrorCode.AUTH_MISSING_TOKEN,
                "send the connector token as Authorization: Bearer",
            )
        try:
            claims = verify_connector_token(
                token.strip(),
                tunnel.config.connectors,
                tunnel=tunnel.name,
                now=time.time(),
                replay=self.jti_cache,
            )
        except AuthError as exc:
            raise self.auth_failed(scope, exc.error_code, str(exc)) from None
        await send({"type": "websocket.accept", "subprotocol": SUBPROTOCOL})
        session = ConnectorSession(
            WebSocketIO(receive, send, (scope.get("extensions") or {}).get(SEND_NOW)),
            tunnel=tunnel.name,
            connector_id=claims.connector_id,
            nonce=claims.nonce,
            relay_key=self.config.private_key,
            relay_key_id=self.relay_key_id,
            limits=self.config.limits,
            peer=self.client_host(scope),
            protocol_limits=self.protocol_limits,
            connector_key_hex=claims.public_key_hex,
        )
        session.on_checkpoint = self._on_checkpoint
        fields: dict[str, Any] = {
            "tunnel": tunnel.name,
            "connector": claims.connector_id,
            "session": session.session_id,
            "peer": session.peer,
        }
        try:
            await session.handshake()
        except HandshakeFailed as exc:
            self.counters.refuse("connector.handshake_failed")
            log_event("connector.handshake_failed", level=logging.WARNING, **fields, why=exc)
            return
        log_event("connector.ready", **fields)
        self.counters.count("connector_sessions")
        try:
            await session.run(on_ready=lambda: tunnel.add(session))
        finally:
            tunnel.remove(session)
            log_event("connector.closed", **fields, queries=session.queries)

    def reload(self, config: RelayConfig) -> dict[str, Any]:
        """Take the keys of a re-read config without dropping a session (SIGHUP).

        The relay key signs the HELLOs of new connections from now on; connections made before
        keep the key their HELLO was signed with (SPEC.md 8.3). Connector keys are replaced per
        tunnel: connections whose key is no longer registered are drained (they reconnect with
        their current key while in-flight queries finish), the others are untouched. Settings that
        need a restart (listen, TLS, issuers, limits) are kept as they are and named in the
        returned summary's ``restart_needed``.
        """
        restart_needed = [
            name
            for name in (
                "listen",
                "tls_cert_file",
                "tls_key_file",
                "identity",
                "limits",
                "audit_token_sha256",
                "checkpoint_file",
            )
            if getattr(config, name) != getattr(self.config, name)
        ]
        old_key_id = self.relay_key_id
        try:
            # the enrolled keys as the file holds them now (config loading checked it)
            enrollments = (
                EnrollmentStore(config.enrollment_file) if config.enrollment_file else None
            )
        except ConfigError as exc:
            log_event(
                "relay.reload_failed",
                level=logging.ERROR,
                problem=str(exc),
                hint="fix the file and send SIGHUP again; the running config is unchanged",
            )
            return {"failed": str(exc)}
        self.enrollments = enrollments
        self.config = dataclasses.replace(
            self.config,
            private_key=config.private_key,
            tunnels=config.tunnels,
            public_url=config.public_url,
            stats_token_sha256=config.stats_token_sha256,
            enrollment_file=config.enrollment_file,
        )
        self.relay_key_id = key_id(config.private_key)
        self.relay_public_key = encode_public_key(config.private_key)
        drained = self._apply_tunnels()
        summary: dict[str, Any] = {
            "relay_key_id": self.relay_key_id,
            "previous_relay_key_id": old_key_id,
            "tunnels": len(config.tunnels),
            "connector_keys": sum(
                len(k) for t in config.tunnels.values() for k in t.connectors.values()
            ),
            "enrolled_keys": enrollments.count() if enrollments is not None else 0,
            "drained": len(drained),
            "kept": sum(1 for s in self.registry.sessions() if not s.closed and not s.draining),
            "restart_needed": restart_needed,
        }
        log_event("relay.reloaded", **{k: v for k, v in summary.items() if k != "restart_needed"})
        if restart_needed:
            log_event(
                "relay.reload_partial",
                level=logging.WARNING,
                changed=",".join(restart_needed),
                hint="restart the relay to apply these; keys and tunnels were applied",
            )
        return summary

    async def drain_all(self, reason: str) -> None:
        """Send DRAIN to every connector connection and refuse new ones (graceful shutdown)."""
        self.shutting_down = True
        for session in list(self.registry.sessions()):
            session.drain(reason)


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n"
