"""The QUERY pipeline: zero trust, every step fails closed, in this order.

1. The relay attestation (`protocol.verify_attestation`): signature by a pinned relay key, this
   connection's session id, a fresh timestamp, every hash recomputed from the frame, and a
   connector-wide replay cache of nonces and query ids (a query id is never executed twice, even
   across HA connections).
2. The end user's IdP token, verified HERE (identity/oidc.py), not trusted from the relay.
3. The policy (connector/policy.py): role, statement size, named queries, caps, and the
   read-only check, which parses in a worker process (a thread for statements of at most 1 KiB)
   within a time budget taken from the query's timeout (connector/_readonly.py
   `ReadOnlyChecker`): the event loop never parses, and a parse over budget is killed.
4. Parameters decoded into typed, bound values (connector/encode.py).
5. Fair admission (`protocol.FairAdmission`): an identity with its role's
   ``max_concurrent_per_identity`` queries running or waiting is refused at once; when all
   ``max_concurrent_queries`` slots are taken the query waits (at most `ADMISSION_WAIT_S`, counted
   against its timeout) and each freed slot goes to the waiting identity with the fewest running.
   Refusals are ``limits.too_many_queries`` with ``"limit": "identity"`` or ``"connector"``.
6. Execution and streaming (connector/execute.py) with the smaller of role caps and request
   options; then exactly one terminal DONE or ERROR line, and one audit record.

Nothing in a refused request reaches SQL Server. Logs carry ids, codes and counts: never tokens,
SQL parameter values or the texts of SQL errors a statement raised (which can quote values).

What the client's ERROR record says names the failure class and what to do; when the cause is
internal (a refused login, an unreachable or failing SQL Server, its host, port and answer, an
identity provider's keys that cannot be fetched) the record says so and the cause is logged here
under the query id (`QueryFailed.detail`), never sent.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from connector._metrics import NO_METRICS, Metrics
from connector._readonly import (
    CheckTimeout,
    ReadOnlyChecker,
    ReadOnlyVerdict,
    remembered_fingerprint,
)
from connector._txcontrol import transaction_control
from connector.audit import AuditLog, AuditOutcome, query_record
from connector.config import SessionsConfig
from connector.encode import BoundParam, ParamError, decode_params
from connector.execute import (
    CONTEXT_KEYS,
    CONTEXT_VALUE_UNITS,
    ExecRequest,
    execute,
    execute_pinned,
    utf16_units,
)
from connector.policy import Decision, Policy, QueryRequest, Role
from connector.pool import Pools
from connector.results import CancelToken, QueryFailed, ResultTotals
from connector.sessions import Session, SessionManager
from connector.tunnel import StreamSink, TunnelLink
from identity.oidc import Identity, TokenError, TokenVerifier
from logsetup import QuerySummary
from protocol import (
    ATTESTATION_MAX_SKEW,
    REFUSALS,
    AuthError,
    ErrorCode,
    FairAdmission,
    ReplayCache,
    SessionEnd,
    SessionOp,
    events,
    ndjson_line,
    verify_attestation,
)

__all__ = ["AuditEvent", "QueryService"]

log = logging.getLogger("edgetds.connector.query")


#: How long a query may wait for a connector slot when all are taken (then limits.too_many_queries).
ADMISSION_WAIT_S = 5.0
#: Most queries waiting for a connector slot; beyond it a full connector refuses at once.
MAX_WAITING = 10_000


@dataclass
class AuditEvent:
    """What we learn about one query as it goes through the pipeline (-> one audit record)."""

    query_id: str
    stream_id: int
    session_id: str | None
    sql: str | None = None
    query: str | None = None
    statement_sql: str | None = None
    subject: str | None = None
    issuer: str | None = None
    role: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    param_types: dict[str, str] = field(default_factory=dict)
    log_param_values: bool = False
    outcome: str = "ok"  # "ok" or the error code
    message: str | None = None
    rows: int = 0
    bytes: int = 0
    result_sets: int = 0
    elapsed_ms: float = 0.0
    sql_error: Mapping[str, int] | None = None
    #: a session operation: ``{"id", "op", ...}`` (role and isolation at begin, the end's reason)
    session: dict[str, Any] | None = None

    @property
    def text(self) -> str | None:
        """The SQL the record fingerprints: the ad-hoc text, else a named query's statement."""
        return self.sql if self.sql is not None else self.statement_sql

    def record(self, fingerprint: str | None = None) -> dict[str, Any]:
        """The connector/audit.py record (values only when the role allows it); ``fingerprint``:
        the statement's, when already known (`query_record`)."""
        status: Literal["ok", "error", "refused"]
        if self.outcome == "ok":
            status = "ok"
        elif self.outcome in REFUSALS:
            status = "refused"
        else:
            status = "error"
        return query_record(
            query_id=self.query_id,
            subject=self.subject,
            issuer=self.issuer,
            role=self.role,
            sql=self.sql,
            query=self.query,
            params=self.params,
            param_types=self.param_types,
            log_param_values=self.log_param_values,
            statement_sql=self.statement_sql,
            outcome=AuditOutcome(
                status=status,
                rows=self.rows,
                bytes=self.bytes,
                duration_ms=int(self.elapsed_ms),
                error_code=None if self.outcome == "ok" else self.outcome,
                sql_error_number=(self.sql_error or {}).get("number"),
            ),
            session=self.session,
            fingerprint=fingerprint,
        )


def _typed_params(raw: Mapping[str, Any], types: Mapping[str, str]) -> dict[str, Any]:
    """Named queries: the template declares each parameter's SQL Server type."""
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if isinstance(value, dict):
            value = value.get("value")
        out[name] = {"type": types[name], "value": value}
    return out


@dataclass(frozen=True)
class _Prepared:
    """What the policy allowed for one statement, with its caps and bound parameters."""

    decision: Decision
    bound: list[BoundParam]
    max_rows: int
    max_bytes: int
    timeout_ms: int
    check_ms: float
    #: the read-only check classified the statement as one plain SELECT (no INTO, no batch)
    plain_select: bool = False


@dataclass(eq=False)
class _Waiter:
    """A query waiting for a connector slot."""

    granted: bool = False
    #: set when granted; made only once the query waits (a free slot is granted at its offer)
    event: trio.Event | None = None


class QueryService:
    """The `QueryHandler` the tunnel links call for every QUERY."""

    def __init__(
        self,
        *,
        relay_keys: Mapping[str, Ed25519PublicKey],
        verifier: TokenVerifier,
        policy: Policy,
        pools: Pools,
        max_concurrent: int,
        audit: AuditLog | None = None,
        fetch_rows: int = 500,
        clock: Callable[[], float] = time.time,
        sessions: SessionsConfig | None = None,
    ) -> None:
        self.relay_keys = relay_keys
        self.verifier = verifier
        self.policy = policy
        self.pools = pools
        self.max_concurrent = max_concurrent
        self.audit = audit
        self.fetch_rows = fetch_rows
        self.clock = clock
        self.replay = ReplayCache(ttl=2 * ATTESTATION_MAX_SKEW + 5)
        #: queries admitted (running), across every tunnel link
        self.in_flight = 0
        self.admission: FairAdmission[_Waiter] = FairAdmission(max_waiting=MAX_WAITING)
        #: woken at the next change (`wait_changed`); None while nobody waits
        self._changed: trio.Event | None = None
        self.counts: dict[str, int] = {}
        #: every query, for the periodic info summary (`connector run --log-summary-s`); the
        #: line per query is debug
        self.summary = QuerySummary(log)
        #: metrics sink (connector/ops.py `Ops`), set by the runtime
        self.ops: Metrics = NO_METRICS
        #: parses statements for read-only roles off the event loop
        self.read_only = ReadOnlyChecker()
        #: transactions across requests (SPEC.md 7.4); its `run` is started by the runtime
        self.sessions = SessionManager(
            sessions or SessionsConfig(), pools, audit_end=self._audit_session_end
        )

    def _count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    async def __call__(
        self, link: TunnelLink, query: events.Query, sink: StreamSink, cancel: CancelToken
    ) -> None:
        started = trio.current_time()
        ev = AuditEvent(query.query_id, query.stream_id, link.session_id)
        ev.sql, ev.query, ev.params = query.sql, query.query, query.params
        self.ops.query_started()
        try:
            try:
                verify_attestation(
                    query,
                    self.relay_keys,
                    session_id=link.session_id or "",
                    now=self.clock(),
                    replay=self.replay,
                )
            except AuthError as exc:
                raise QueryFailed(exc.error_code, str(exc)) from None
            if query.session is not None:
                outcome = await self._session_op(link, query, sink, cancel, ev)
            else:
                outcome = await self._run(query, sink, cancel, ev)
            ev.rows, ev.bytes, ev.result_sets = outcome.rows, outcome.bytes, outcome.result_sets
            done: dict[str, Any] = {
                "rows": outcome.rows,
                "result_sets": outcome.result_sets,
                "elapsed_ms": round((trio.current_time() - started) * 1000, 1),
                "query_id": query.query_id,
            }
            if outcome.rows_affected >= 0:
                done["rows_affected"] = outcome.rows_affected
            if outcome.session is not None:
                done["session"] = dict(outcome.session)
            await sink.finish(ndjson_line({"done": done}), error=False)
        except QueryFailed as exc:
            ev.outcome, ev.message, ev.sql_error = exc.code, exc.message, exc.sql
            if exc.detail:
                log.warning(
                    "query %s: %s",
                    exc.code,
                    exc.detail,
                    extra={"query_id": query.query_id, "code": exc.code, "detail": exc.detail},
                )
            ev.rows, ev.bytes = exc.outcome.rows, exc.outcome.bytes
            ev.result_sets = exc.outcome.result_sets
            await sink.finish(exc.record(query.query_id), error=True)
        except BaseException as exc:
            # Anything else (a bug, a driver surprise, the connection's cancellation) is no
            # success: the audit record and the counters say what it was; the link answers the
            # client with "internal" and logs the traceback.
            ev.outcome = (
                ErrorCode.QUERY_CANCELLED if isinstance(exc, trio.Cancelled) else ErrorCode.INTERNAL
            )
            raise
        finally:
            ev.elapsed_ms = round((trio.current_time() - started) * 1000, 1)
            self._count(ev.outcome)
            self.ops.query_finished(
                role=ev.role,
                outcome=ev.outcome,
                duration_s=ev.elapsed_ms / 1000,
                rows=ev.rows,
                nbytes=ev.bytes,
            )
            self.summary.record(ev.elapsed_ms, error=None if ev.outcome == "ok" else ev.outcome)
            if log.isEnabledFor(logging.DEBUG):  # the line per query; off unless asked for
                log.debug(
                    "query %s",
                    ev.outcome,
                    extra={
                        "event": "query",
                        "outcome": ev.outcome,
                        "query_id": ev.query_id,
                        "subject": ev.subject,
                        "role": ev.role,
                        "rows": ev.rows,
                        "elapsed_ms": ev.elapsed_ms,
                        "sql_number": (ev.sql_error or {}).get("number"),
                    },
                )
            if self.audit is not None:
                try:
                    record = self._audit_record_inline(ev)
                    if record is None:
                        record = await self._audit_record_threaded(ev)
                    # not cancellable (`AuditLog.write`): no shield needed around it
                    await self.audit.write(record)
                except Exception:  # the audit log failing must be loud, never silent
                    log.exception("audit record could not be written")

    def _audit_record_inline(self, ev: AuditEvent) -> dict[str, Any] | None:
        """``ev.record()`` when building it on the event loop costs next to nothing, else None
        (the caller builds it in a worker thread): its fingerprint tokenizes the statement,
        which the event loop never does (a fingerprint already remembered is a hash), and a
        long statement or logged parameter values take time to copy into the record."""
        text = ev.text
        if text is None:
            return ev.record()
        if len(text) > self.read_only.inline_chars or ev.log_param_values:
            return None
        fingerprint = remembered_fingerprint(text)
        return None if fingerprint is None else ev.record(fingerprint)

    async def _audit_record_threaded(self, ev: AuditEvent) -> dict[str, Any]:
        """``ev.record()`` built in a worker thread of the read-only checker's lane for its
        statement; shielded: a cancelled query still gets its record."""
        lane = self.read_only.limiter_for(ev.text)
        with trio.CancelScope(shield=True):
            record = await trio.to_thread.run_sync(ev.record, limiter=lane)
        return record

    async def _identity(self, query: events.Query, ev: AuditEvent) -> Identity:
        """The end user, from the QUERY's token verified here (step 2)."""
        try:
            identity: Identity = await self.verifier.verify(query.token)
        except TokenError as exc:
            if exc.code.startswith("auth."):
                raise QueryFailed(exc.code, exc.message) from None
            # the identity provider's keys could not be loaded: its URL, file or TLS answer
            # are the connector's business, not the client's
            raise QueryFailed(
                exc.code,
                "the connector could not verify the token: its identity provider's keys are "
                "unavailable; retry later",
                detail=exc.message,
            ) from None
        ev.subject, ev.issuer = identity.subject, identity.issuer
        for claim, key, value in (
            ("sub", CONTEXT_KEYS[0], identity.subject),
            ("iss", CONTEXT_KEYS[1], identity.issuer),
        ):
            # (a character counts one or two units: only a long value needs counting)
            if len(value) > CONTEXT_VALUE_UNITS // 2 and utf16_units(value) > CONTEXT_VALUE_UNITS:
                raise QueryFailed(
                    ErrorCode.AUTH_INVALID_TOKEN,
                    f"the token's {claim} claim is longer than the {CONTEXT_VALUE_UNITS} "
                    f"characters SQL Server's session context holds, where the connector sets "
                    f"it ({key}) for every query; the identity provider must issue a shorter one",
                )
        return identity

    async def _run(
        self, query: events.Query, sink: StreamSink, cancel: CancelToken, ev: AuditEvent
    ) -> ResultTotals:
        identity = await self._identity(query, ev)
        prepared = await self._prepare(query, identity, ev)
        decision, bound = prepared.decision, prepared.bound
        assert decision.role is not None
        assert decision.sql is not None
        timeout_ms, check_ms = prepared.timeout_ms, prepared.check_ms
        context = dict(
            zip(CONTEXT_KEYS, (identity.subject, identity.issuer, query.query_id), strict=True)
        )
        try:
            pool = self.pools[decision.role.login]
        except KeyError as exc:
            raise QueryFailed(
                ErrorCode.INTERNAL,
                "the connector's policy and its configuration disagree; its operator must fix "
                "them (`edgetds connector check`)",
                detail=str(exc.args[0]),
            ) from None
        left_ms = timeout_ms - check_ms
        wait_s = min(ADMISSION_WAIT_S, left_ms / 1000) if timeout_ms else ADMISSION_WAIT_S
        key = f"{identity.issuer}\n{identity.subject}"
        waiter, waited_s = await self._admit(key, decision.role, wait_s=wait_s)
        try:
            if timeout_ms:  # the check and the admission wait count against the query's timeout
                timeout_ms = max(1, round(left_ms - waited_s * 1000))
            req = ExecRequest(
                query_id=query.query_id,
                sql=decision.sql,
                params=bound,
                context=context,
                max_rows=prepared.max_rows,
                max_bytes=prepared.max_bytes,
                timeout_s=timeout_ms / 1000 if timeout_ms else None,
                chunk_bytes=min(32 * 1024, sink.link.max_payload),
                fetch_rows=self.fetch_rows,
                one_request=prepared.plain_select,
            )
            return await execute(pool, req, sink, cancel)
        finally:
            self._leave(key, waiter)

    async def _prepare(
        self,
        query: events.Query,
        identity: Identity,
        ev: AuditEvent,
        *,
        role: Role | None = None,
    ) -> _Prepared:
        """Steps 3 and 4: the policy's decision (only ``role``, a session's, when given) and the
        bound parameters; raises QueryFailed for a refusal."""
        request = QueryRequest(sql=query.sql, query=query.query, params=query.params)
        options = query.options
        asked_ms = _opt_int(options.get("timeout_ms"))
        checked = trio.current_time()
        verdict: ReadOnlyVerdict | None = None
        if query.sql is not None and self.policy.needs_read_only_check(
            identity, request, role=role
        ):
            budget_s = asked_ms / 1000 if asked_ms and asked_ms > 0 else math.inf
            try:
                verdict = await self.read_only.check(query.sql, budget_s=budget_s)
            except CheckTimeout as exc:
                raise QueryFailed(
                    ErrorCode.POLICY_CHECK_TIMEOUT,
                    f"{exc}: the statement is too long or too complex to check for a read-only "
                    "role; send a shorter statement, raise timeout_ms, or use a named query",
                ) from None
        check_ms = (trio.current_time() - checked) * 1000
        decision: Decision = self.policy.authorize(identity, request, read_only=verdict, role=role)
        if decision.role is not None:
            ev.role = decision.role.name
        if not decision.allowed:
            raise QueryFailed(decision.code or ErrorCode.POLICY_DENIED, decision.reason)
        assert decision.role is not None
        assert decision.sql is not None
        raw = query.params
        if decision.param_types:
            raw = _typed_params(raw, decision.param_types)
        try:
            bound = decode_params(raw)
        except ParamError as exc:
            raise QueryFailed(ErrorCode.REQUEST_INVALID, str(exc)) from None
        ev.statement_sql = decision.sql
        ev.log_param_values = decision.role.log_param_values
        ev.param_types = {name: p.sql_type for name, p in zip(raw, bound, strict=True)}
        max_rows, max_bytes, timeout_ms = decision.limits(
            max_rows=_opt_int(options.get("max_rows")), timeout_ms=asked_ms
        )
        # the check's time counts against the query's timeout
        if timeout_ms - check_ms <= 0:
            raise QueryFailed(
                ErrorCode.QUERY_TIMEOUT,
                f"the read-only check took {check_ms:.0f} ms of the query's {timeout_ms} ms",
            )
        # ad-hoc SQL the read-only check allowed: harmless to run even if the session context
        # failed (execute.py sends both in one request then); a named query was not checked
        plain_select = verdict is not None and verdict.allowed and decision.query is None
        return _Prepared(decision, bound, max_rows, max_bytes, timeout_ms, check_ms, plain_select)

    # -- sessions (SPEC.md 7.4; connector/sessions.py) ------------------------------------------

    async def _session_op(
        self,
        link: TunnelLink,
        query: events.Query,
        sink: StreamSink,
        cancel: CancelToken,
        ev: AuditEvent,
    ) -> ResultTotals:
        """One operation of a session: begin, run, commit, rollback, savepoint, rollback_to."""
        assert query.session is not None
        spec = query.session
        op = SessionOp(spec["op"])
        ev.session = {"id": spec["id"], "op": op.value}
        identity = await self._identity(query, ev)
        owner = (identity.issuer, identity.subject)
        if op is SessionOp.BEGIN:
            role = self.policy.session_role(identity, spec.get("role"))
            if isinstance(role, Decision):
                raise QueryFailed(role.code or ErrorCode.POLICY_DENIED, role.reason)
            ev.role = role.name
            ev.session["isolation"] = spec.get("isolation") or "read committed"
            session = await self.sessions.begin(
                link,
                spec,
                owner=owner,
                role=role,
                query_id=query.query_id,
                now_ms=int(self.clock() * 1000),
            )
            state = session.state()
            state["expires_at"] = session.expires_at_ms
            state["idle_timeout_ms"] = round(session.idle_timeout_s * 1000)
            return ResultTotals(session=state)
        rollback = op is SessionOp.ROLLBACK
        session = self.sessions.find(link, spec["id"], owner, busy_ok=rollback)
        ev.role = session.role.name
        if rollback and session.busy:
            await self.sessions.preempt(session)
            session = self.sessions.find(link, spec["id"], owner)  # ended meanwhile: say so
        self.sessions.start_op(session, cancel)
        failed: QueryFailed | None = None
        outcome = ResultTotals()
        try:
            if op is SessionOp.RUN:
                outcome = await self._session_statement(session, query, identity, sink, cancel, ev)
            else:
                await self.sessions.control(session, op, spec.get("name"))
        except QueryFailed as exc:
            failed = exc
        finally:
            if op is SessionOp.RUN and not (failed is not None and failed.code in REFUSALS):
                with trio.CancelScope(shield=True):
                    await self.sessions.after_statement(session, failed)
            self.sessions.finish_op(session)
        if session.reason is not None:
            ev.session["reason"] = session.reason.value
            with trio.CancelScope(shield=True):
                await self.sessions.wait_ended(session)
        if failed is not None:
            if session.reason is SessionEnd.ROLLED_BACK_BY_SERVER:
                failed.message += (
                    "; SQL Server ended the transaction, so the session was rolled back"
                )
            failed.session = session.state()
            raise failed
        outcome.session = session.state()
        return outcome

    async def _session_statement(
        self,
        session: Session,
        query: events.Query,
        identity: Identity,
        sink: StreamSink,
        cancel: CancelToken,
        ev: AuditEvent,
    ) -> ResultTotals:
        """A ``run``: refuse transaction control, then the policy of the session's role, then
        the statement on the session's connection."""
        text = query.sql
        if text is not None:
            lane = self.read_only.limiter_for(text)
            why = await trio.to_thread.run_sync(transaction_control, text, limiter=lane)
            if why is not None:
                raise QueryFailed(
                    ErrorCode.POLICY_DENIED,
                    f"a statement in a session may not control the transaction ({why}); use the "
                    "session's commit, rollback, savepoint and rollback_to operations",
                )
        prepared = await self._prepare(query, identity, ev, role=session.role)
        assert prepared.decision.sql is not None
        assert session.pc is not None
        timeout_ms = prepared.timeout_ms - prepared.check_ms
        req = ExecRequest(
            query_id=query.query_id,
            sql=prepared.decision.sql,
            params=prepared.bound,
            context={},
            max_rows=prepared.max_rows,
            max_bytes=prepared.max_bytes,
            timeout_s=max(0.001, timeout_ms / 1000) if prepared.timeout_ms else None,
            chunk_bytes=min(32 * 1024, sink.link.max_payload),
            fetch_rows=self.fetch_rows,
            setup=False,
        )
        return await execute_pinned(session.pool, session.pc, req, sink, cancel)

    async def _audit_session_end(self, session: Session, reason: SessionEnd) -> None:
        """The audit record of a session's end, whoever ended it (SPEC.md 7.4)."""
        ev = AuditEvent(f"{session.id}/end", 0, None)
        ev.issuer, ev.subject = session.owner
        ev.role = session.role.name
        ev.session = {"id": session.id, "op": "end", "reason": reason.value}
        if self.audit is None:
            return
        try:
            await self.audit.write(ev.record())
        except Exception:  # the audit log failing must be loud, never silent
            log.exception("audit record could not be written")

    # -- admission ------------------------------------------------------------------------------

    async def wait_changed(self) -> None:
        """Return at the next change of `in_flight` or of the admission queue (a query starts
        waiting, is admitted, stops waiting or ends). Re-read them after it returns."""
        if self._changed is None:
            self._changed = trio.Event()
        await self._changed.wait()

    def _notify(self) -> None:
        if self._changed is not None:  # an Event per change only while someone waits for one
            self._changed.set()
            self._changed = None

    def _pump(self) -> None:
        """Hand every free connector slot to a waiting query, fairest first."""
        self._notify()
        if not self.admission.waiting():
            return
        free = self.max_concurrent - self.admission.admitted_total()
        if free > 0:
            for _key, waiter in self.admission.grant(free):
                waiter.granted = True
                if waiter.event is not None:
                    waiter.event.set()

    def _give_back(self, key: str, waiter: _Waiter) -> None:
        if waiter.granted:
            self.admission.release(key)
            self._pump()
        else:
            self.admission.withdraw(key, waiter)
            self._notify()

    async def _admit(self, key: str, role: Role, *, wait_s: float) -> tuple[_Waiter, float]:
        """Admit one query of identity `key` (step 5): its waiter (`_leave` with it once the
        query ended) and the seconds it waited."""
        waiter = _Waiter()
        limit = role.max_concurrent_per_identity
        refusal = self.admission.offer(key, waiter, limit=limit)
        if refusal == "identity":
            raise QueryFailed(
                ErrorCode.LIMITS_TOO_MANY_QUERIES,
                f"role {role.name!r} lets one identity run at most {limit} queries at once on "
                "this connector (max_concurrent_per_identity); wait for one to finish, then retry",
                limit="identity",
            )
        if refusal == "tunnel":
            raise self._full(f"{MAX_WAITING} queries are already waiting")
        self._pump()
        if waiter.granted:  # a free slot (the common case), granted by _pump: no wait
            self.in_flight += 1  # (_pump has just notified: nobody can wait since)
            return waiter, 0.0
        started = trio.current_time()
        try:
            waiter.event = trio.Event()
            with trio.move_on_after(wait_s):
                await waiter.event.wait()
        except BaseException:  # cancelled while waiting (perhaps just granted): give it back
            self._give_back(key, waiter)
            raise
        if not waiter.granted:
            self._give_back(key, waiter)
            raise self._full(f"no slot freed within {round(wait_s * 1000)} ms")
        self.in_flight += 1
        self._notify()
        return waiter, trio.current_time() - started

    def _leave(self, key: str, waiter: _Waiter) -> None:
        """The query `_admit` let in ended: its slot goes to the next waiting query."""
        self.in_flight -= 1
        self._give_back(key, waiter)  # (it notifies)

    def _full(self, why: str) -> QueryFailed:
        return QueryFailed(
            ErrorCode.LIMITS_TOO_MANY_QUERIES,
            f"the connector runs at most {self.max_concurrent} queries at once "
            f"(max_concurrent_queries) and {why}; retry after the Retry-After delay",
            limit="connector",
        )


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
