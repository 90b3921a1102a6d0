"""Who may run what: map a verified identity to a least-privilege role, and authorize each query.

Policy document (a policy TOML file, or the same tables inline under ``[policy]`` in
connector.toml)::

    [[deny]]                                   # deny rules beat every role
    match = { groups = ["contractors"] }
    reason = "contractors have no database access"

    [roles.analyst]                            # roles are tried in file order (see below)
    match = { groups = ["analysts"], scp = { values = ["db.read"], split = "space" } }
    issuers = ["https://login.example.com/v2.0"]   # optional: only tokens from these issuers
    login = "reader"            # a [logins.reader] table of connector.toml (user + password_env
                                # or password_file); credentials never come from the relay
    read_only = true            # default true: everything this role runs must be one plain SELECT
    allow_sql = true            # default false: ad-hoc SQL allowed (else named queries only)
    max_rows = 10000            # default 100000
    max_bytes = 16777216        # default 64 MiB of encoded rows
    timeout_ms = 30000          # default 30000
    max_statement_bytes = 262144  # default 256 KiB: longer ad-hoc SQL (UTF-8 bytes) is refused
                                  # with request.too_large before it is checked or run
    max_concurrent_per_identity = 32  # default 32: one identity's queries running or waiting
                                      # at this connector; more: 429 limits.too_many_queries
    log_param_values = false    # default false: the audit log records parameter names and types

    [roles.analyst.queries.orders_by_customer]
    sql = "SELECT id, total FROM orders WHERE customer_id = @customer_id"
    params = { customer_id = "int" }           # exactly these parameters, with SQL Server types

    [roles.admin]
    match = { groups = ["admins"] }
    login = "writer"
    read_only = false
    allow_sql = true

Matching: ``match`` maps a claim path (dotted, e.g. ``realm_access.roles``; an exact top-level
key such as ``"https://example.com/groups"`` wins) to accepted values. A role (or deny rule)
matches when ANY listed path holds ANY listed value; ``sub`` and ``iss`` work as paths too.

- A claim is a string, an integer, or a list of strings/integers; each is matched WHOLE: the
  group ``"finance admins"`` is one name and never matches ``admins``. A string ``"42"`` and an
  integer ``42`` are different values.
- Only a claim that is ONE space-delimited string, such as OAuth ``scope`` or Entra's ``scp``, is
  split, and only when the policy says so for that path:
  ``scp = { values = ["db.read"], split = "space" }`` (the claim must then be a string; it is
  split on spaces).
- Any other shape (an object, a float, a boolean, a list holding one of those or a list) where an
  applicable rule looks is refused (``policy.denied``): the policy cannot be evaluated, so nothing
  runs. Fix the IdP's claim mapping.
- Roles compare exactly (case-sensitive, no Unicode normalization, no trimming): ``Admins`` and
  ``admins`` are different groups. Deny rules cast the wider net: they compare case-insensitively
  after Unicode NFKC normalization and trimming, so a deny of ``contractors`` also refuses
  ``Contractors`` and `` contractors``.

Choosing a role (deterministic): deny rules first (any match refuses with ``policy.denied``);
then the matching roles are tried in FILE ORDER and the first that permits the request is used.
List roles from least to most privileged, so a person in both ``analysts`` and ``admins`` runs
reads as the analyst and only a write as the admin. When no matching role permits the request
the refusal is the first matching role's (``policy.not_read_only``, ``policy.unknown_query``,
``policy.denied``); with no matching role at all it is ``policy.denied``. Refusal reasons name
roles, claims and keywords, never parameter values.

The read-only check parses the statement, which costs microseconds per character. The connector
runs it off the event loop (:func:`connector._readonly.check_read_only_in_thread`) when
:meth:`Policy.needs_read_only_check` says a role needs it, and hands the verdict to
:meth:`Policy.authorize`; without one, ``authorize`` checks inline (tools, tests).
"""

from __future__ import annotations

import functools
import tomllib
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from connector._readonly import ReadOnlyVerdict, check_read_only
from identity.oidc import Identity
from protocol import DEFAULT_STATEMENT_BYTES, MAX_FRAME_HARD, ErrorCode

__all__ = [
    "Decision",
    "DenyRule",
    "Policy",
    "ClaimRule",
    "ClaimShapeError",
    "PolicyError",
    "QueryRequest",
    "QueryTemplate",
    "Role",
    "check_read_only",
    "claim_values",
]

_ROLE_KEYS = {
    "match",
    "issuers",
    "login",
    "read_only",
    "allow_sql",
    "max_rows",
    "max_bytes",
    "timeout_ms",
    "max_statement_bytes",
    "max_concurrent_per_identity",
    "max_sessions",
    "log_param_values",
    "queries",
}
#: Claims that IdPs send as LISTS of names: splitting them is always a mistake.
_LIST_CLAIMS = frozenset({"groups", "roles", "realm_access.roles", "amr", "aud", "wids"})
_DEFAULT_CAPS = {
    "max_rows": 100_000,
    "max_bytes": 64 * 1024 * 1024,
    "timeout_ms": 30_000,
    "max_statement_bytes": DEFAULT_STATEMENT_BYTES,
    "max_concurrent_per_identity": 32,
}
#: A statement cannot be longer than a QUERY frame, whose payload is at most 16 MiB.
_CAP_MAXIMUM = {"max_statement_bytes": MAX_FRAME_HARD}


class PolicyError(ValueError):
    """The policy is unusable; ``problems`` lists every problem as 'file: [table] key: what'."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class QueryTemplate:
    """A named query: fixed SQL, and exactly these parameters (name -> SQL Server type)."""

    name: str
    sql: str
    params: Mapping[str, str]


ClaimValue = str | int


class ClaimShapeError(ValueError):
    """A claim an applicable rule looks at has a shape the policy cannot evaluate."""


@dataclass(frozen=True)
class ClaimRule:
    """The accepted values at one claim path; ``split``: the claim is one space-delimited string."""

    values: frozenset[ClaimValue]
    split: bool = False


def _fold(value: ClaimValue) -> ClaimValue:
    """How deny rules compare: NFKC, case-folded, trimmed (integers as they are)."""
    if not isinstance(value, str):
        return value
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold()).strip()


@dataclass(frozen=True)
class Matcher:
    """claim path -> accepted values; matches when any path holds any value.

    ``fold`` (deny rules): compare case-insensitively after NFKC normalization and trimming.
    """

    rules: Mapping[str, ClaimRule]
    fold: bool = False

    def hits(self, identity: Identity) -> list[str]:
        """``path=value`` for every (path, value) pair that matched (empty: no match).

        Raises:
            ClaimShapeError: a claim this matcher reads has a shape it cannot evaluate.
        """
        found = []
        for path, rule in self.rules.items():
            values = claim_values(identity, path, split=rule.split)
            if self.fold:
                accepted = {_fold(v) for v in rule.values}
                matched = {v for v in values if _fold(v) in accepted}
            else:
                matched = set(values & rule.values)
            for value in sorted(matched, key=str):
                found.append(f"{path}={value}")
        return found


@dataclass(frozen=True)
class DenyRule:
    index: int
    match: Matcher
    issuers: frozenset[str]
    reason: str

    def hits(self, identity: Identity) -> list[str]:
        if self.issuers and identity.issuer not in self.issuers:
            return []
        return self.match.hits(identity)


@dataclass(frozen=True)
class Role:
    """A least-privilege role: which SQL Server login runs its queries, what it may run, caps."""

    name: str
    match: Matcher
    issuers: frozenset[str]
    login: str
    read_only: bool = True
    allow_sql: bool = False
    max_rows: int = _DEFAULT_CAPS["max_rows"]
    max_bytes: int = _DEFAULT_CAPS["max_bytes"]
    timeout_ms: int = _DEFAULT_CAPS["timeout_ms"]
    max_statement_bytes: int = _DEFAULT_CAPS["max_statement_bytes"]
    #: queries one identity (issuer + subject) may have running or waiting at this connector
    max_concurrent_per_identity: int = _DEFAULT_CAPS["max_concurrent_per_identity"]
    #: sessions (transactions across requests) this role may hold open at once at this
    #: connector; 0: the role opens no sessions; None: only the connector's [sessions] caps
    max_sessions: int | None = None
    log_param_values: bool = False
    queries: Mapping[str, QueryTemplate] = field(default_factory=dict)

    def hits(self, identity: Identity) -> list[str]:
        if self.issuers and identity.issuer not in self.issuers:
            return []
        return self.match.hits(identity)

    def summary(self) -> str:
        runs = []
        if self.allow_sql:
            runs.append("ad-hoc SELECTs only" if self.read_only else "any ad-hoc SQL")
        if self.queries:
            runs.append("named queries " + ", ".join(sorted(self.queries)))
        what = "; ".join(runs) or "nothing (no allow_sql, no queries)"
        return (
            f"login {self.login!r}; may run {what}; caps: {self.max_rows} rows, "
            f"{self.max_bytes} bytes, {self.timeout_ms} ms, statements up to "
            f"{self.max_statement_bytes} bytes; parameter values "
            f"{'logged' if self.log_param_values else 'redacted'} in the audit log"
        )


@dataclass(frozen=True, kw_only=True)
class QueryRequest:
    """What a client asked to run: ad-hoc ``sql`` or a named ``query``, with parameters."""

    sql: str | None = None
    query: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def sql_bytes(self) -> int:
        """The size of ``sql`` in UTF-8 bytes (what ``max_statement_bytes`` limits); 0 if none."""
        # surrogatepass: a lone surrogate from JSON counts as its 3 bytes instead of raising
        return len(self.sql.encode("utf-8", "surrogatepass")) if self.sql is not None else 0


@dataclass(frozen=True, kw_only=True)
class Decision:
    """The outcome of :meth:`Policy.authorize`.

    When ``allowed``: ``role`` runs ``sql`` (the ad-hoc text or the template's SQL) with
    ``param_types`` (declared template types; empty for ad-hoc SQL). When refused: ``code`` is a
    FIXED protocol error code and ``reason`` explains it without echoing parameter values.
    """

    allowed: bool
    reason: str
    code: ErrorCode | None = None
    role: Role | None = None
    sql: str | None = None
    query: str | None = None
    param_types: Mapping[str, str] = field(default_factory=dict)

    def limits(
        self, *, max_rows: int | None = None, timeout_ms: int | None = None
    ) -> tuple[int, int, int]:
        """(max_rows, max_bytes, timeout_ms): the role's caps, lowered by what the client asked."""
        if self.role is None:
            raise ValueError("a refused decision has no limits")
        rows, ms = self.role.max_rows, self.role.timeout_ms
        if max_rows is not None and max_rows >= 0:
            rows = min(rows, max_rows)
        if timeout_ms is not None and timeout_ms > 0:
            ms = min(ms, timeout_ms)
        return rows, self.role.max_bytes, ms


def _shape(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a number with a fraction or exponent"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return "an integer" if isinstance(value, int) else type(value).__name__


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    """identity.oidc.claim_at, except that a dotted path through a non-object is refused: a deny
    rule on ``org.status`` must not read a list ``org`` as "no status"."""
    if path in claims:
        return claims[path]
    node: Any = claims
    parts = path.split(".")
    for i, part in enumerate(parts):
        if node is None:
            return None
        if not isinstance(node, Mapping):
            inside = ".".join(parts[:i])
            raise ClaimShapeError(
                f"claim {inside!r} is {_shape(node)}, but the policy reads {path!r} inside it"
            )
        node = node.get(part)
    return node


def claim_values(identity: Identity, path: str, *, split: bool = False) -> frozenset[ClaimValue]:
    """The claim at ``path`` as a set of values, each matched whole (see the module docstring).

    Absent (or null): the empty set. ``split``: the claim must be one string, split on spaces.

    Raises:
        ClaimShapeError: naming the path and the shape found.
    """
    value = _claim(identity.claims, path)
    if value is None:
        return frozenset()
    if split:
        if not isinstance(value, str):
            raise ClaimShapeError(
                f"claim {path!r} is {_shape(value)}, but the policy splits it "
                f'(split = "space" expects one space-delimited string)'
            )
        return frozenset(part for part in value.split(" ") if part)
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int):
            where = f"a list holding {_shape(item)}" if isinstance(value, list) else _shape(item)
            raise ClaimShapeError(
                f"claim {path!r} is {where}; the policy matches strings and integers "
                f"(or a list of them)"
            )
    return frozenset(items)


#: identities whose matching roles a `Policy` remembers (the oldest is forgotten first)
MATCH_CACHE_SIZE = 1024


class Policy:
    """Roles and deny rules loaded from TOML. Immutable after loading.

    Which deny rule or roles match an identity is remembered per `Identity` OBJECT (at most
    `MATCH_CACHE_SIZE` of them): an Identity is immutable and its claims are the verified token's,
    and the token verifier hands out the same object for the same token while its verification
    holds (identity/oidc.py), so every query of a token after its first skips the claim matching.
    The key is the object itself, never its subject or token hash: another object (another
    token, other claims) is matched afresh. A reloaded policy is a new `Policy`, with no memory.
    """

    def __init__(self, roles: list[Role], deny: list[DenyRule], *, source: str) -> None:
        self.roles = tuple(roles)
        self.deny = tuple(deny)
        self.source = source
        self._matched: dict[Identity, Decision | tuple[Role, ...]] = {}

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read a policy file. Raises PolicyError naming file, table and key of each problem."""
        path = Path(path)
        try:
            with path.open("rb") as fh:
                doc = tomllib.load(fh)
        except OSError as exc:
            raise PolicyError([f"{path}: cannot read the policy file: {exc.strerror}"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError([f"{path}: not valid TOML: {exc}"]) from None
        return cls.from_dict(doc, source=str(path))

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, source: str, prefix: str = "") -> Policy:
        """Build from a parsed document (``prefix="policy."`` when inline in connector.toml)."""
        return _Loader(source, prefix).policy(doc)

    def logins(self) -> frozenset[str]:
        """Every login a role names (the connector checks each has a [logins.NAME] table)."""
        return frozenset(role.login for role in self.roles)

    @property
    def max_statement_bytes(self) -> int:
        """The largest ``max_statement_bytes`` of a role that runs ad-hoc SQL (what READY
        announces: the relay refuses longer SQL for everyone, each role enforces its own)."""
        sizes = [r.max_statement_bytes for r in self.roles if r.allow_sql]
        return max(sizes, default=DEFAULT_STATEMENT_BYTES)

    def needs_read_only_check(
        self, identity: Identity, request: QueryRequest, *, role: Role | None = None
    ) -> bool:
        """Whether :meth:`authorize` would parse ``request.sql``: some role that matches the
        identity (only ``role``, when given) is read-only, runs ad-hoc SQL and takes a statement
        of this size."""
        roles = self._matching(identity, request)
        return not isinstance(roles, Decision) and any(
            _needs_check(r, request) for r in roles if role is None or r is role
        )

    def session_role(self, identity: Identity, name: str | None) -> Role | Decision:
        """The role a session of ``identity`` runs as (SPEC.md 7.4 ``begin``): ``name`` if given
        and it matches, else the first matching role in file order that allows sessions."""
        roles = self._matching(identity, QueryRequest(sql=""))
        if isinstance(roles, Decision):
            return roles
        for role in roles:
            if (name is None or role.name == name) and role.max_sessions != 0:
                return role
        if name is not None and any(role.name == name for role in roles):
            return _refuse(ErrorCode.POLICY_DENIED, f"role {name!r} opens no sessions")
        if name is not None:
            return _refuse(ErrorCode.POLICY_DENIED, f"role {name!r} does not match this identity")
        return _refuse(ErrorCode.POLICY_DENIED, "no role of this identity opens sessions")

    def authorize(
        self,
        identity: Identity,
        request: QueryRequest,
        *,
        read_only: ReadOnlyVerdict | None = None,
        role: Role | None = None,
    ) -> Decision:
        """Pick the role for this identity and request, or refuse (see module docstring).

        Args:
            identity: the verified end user.
            request: what the user asked to run.
            read_only: ``check_read_only(request.sql)`` when the caller already has it (the
                connector computes it off its event loop, in a worker process or thread); None
                checks here, if a role needs it.
            role: only this role may run it (a session's, fixed at its begin); it must still
                match the identity and no deny rule may.
        """
        roles = self._matching(identity, request)
        if isinstance(roles, Decision):
            return roles
        if role is not None:
            if role not in roles:
                return _refuse(
                    ErrorCode.POLICY_DENIED,
                    f"role {role.name!r} of the session no longer matches this identity",
                )
            roles = [role]
        first: Decision | None = None
        for role in roles:
            if read_only is None and _needs_check(role, request):
                assert request.sql is not None
                read_only = check_read_only(request.sql)
            decision = _try_role(role, request, read_only)
            if decision.allowed:
                return decision
            first = first or decision
        assert first is not None
        return first

    def _matching(self, identity: Identity, request: QueryRequest) -> Decision | Sequence[Role]:
        """The roles that match ``identity`` in file order, or the refusal if there are none."""
        if (request.sql is None) == (request.query is None):
            return _refuse(ErrorCode.REQUEST_INVALID, "send exactly one of 'sql' or 'query'")
        matched = self._matched.get(identity)
        if matched is None:
            matched = self._match(identity)
            if len(self._matched) >= MATCH_CACHE_SIZE:
                self._matched.pop(next(iter(self._matched)), None)
            # Identity compares and hashes as an object (eq=False): the key is this very object
            self._matched[identity] = matched
        return matched

    def _match(self, identity: Identity) -> Decision | tuple[Role, ...]:
        """The deny rule's refusal, or the matching roles in file order, or the refusal if none."""
        try:
            for rule in self.deny:
                hits = rule.hits(identity)
                if hits:
                    why = f": {rule.reason}" if rule.reason else ""
                    return _refuse(
                        ErrorCode.POLICY_DENIED,
                        f"denied by deny rule #{rule.index} ({hits[0]}){why}",
                    )
            matching = tuple(role for role in self.roles if role.hits(identity))
        except ClaimShapeError as exc:
            return _refuse(ErrorCode.POLICY_DENIED, _unusable(exc))
        if not matching:
            return _refuse(
                ErrorCode.POLICY_DENIED,
                f"no role matches subject {identity.subject!r} of issuer {identity.issuer!r}; "
                f"run `edgetds connector explain` to see which claims the roles look at",
            )
        return matching

    def explain(self, identity: Identity) -> str:
        """Human-readable: which deny rules and roles this identity matches, and why."""
        lines = [
            f"subject {identity.subject!r}, issuer {identity.issuer!r} (policy {self.source})",
        ]
        looks = sorted(
            {(p, r.split) for role in self.roles for p, r in role.match.rules.items()}
            | {(p, r.split) for deny in self.deny for p, r in deny.match.rules.items()}
        )
        for path, split in looks:
            label = f"{path} (split on spaces)" if split else path
            try:
                values = sorted(claim_values(identity, path, split=split), key=str)
            except ClaimShapeError as exc:
                lines.append(f"  claim {label}: UNUSABLE: {exc}")
                continue
            lines.append(f"  claim {label}: {values if values else '(absent)'}")
        denied = False
        unusable: ClaimShapeError | None = None
        for rule in self.deny:
            hits, problem = _hits(rule, identity)
            if problem is not None:
                unusable = unusable or problem
                lines.append(f"  deny rule #{rule.index}: cannot be evaluated ({problem})")
            elif hits:
                denied = True
                lines.append(f"DENIED by deny rule #{rule.index} ({', '.join(hits)}) {rule.reason}")
        chosen = None
        for role in self.roles:
            hits, problem = _hits(role, identity)
            if problem is not None:
                unusable = unusable or problem
                lines.append(f"  role {role.name}: cannot be evaluated ({problem})")
                continue
            if not hits:
                why = f"needs one of {_describe(role.match)}"
                if role.issuers and identity.issuer not in role.issuers:
                    why = f"only for issuers {sorted(role.issuers)}"
                lines.append(f"  role {role.name}: no match ({why})")
                continue
            mark = "" if chosen or denied or unusable else "  <- first match, tried first"
            chosen = chosen or role
            lines.append(f"  role {role.name}: MATCH via {', '.join(hits)}{mark}")
            lines.append(f"      {role.summary()}")
        if unusable is not None:
            lines.append(f"result: every query is refused (policy.denied): {_unusable(unusable)}")
        elif denied:
            lines.append("result: every query is refused (policy.denied)")
        elif chosen is None:
            lines.append("result: no role matches; every query is refused (policy.denied)")
        else:
            lines.append(
                "result: each query uses the first matching role (file order) that permits it"
            )
        return "\n".join(lines)


def _hits(rule: DenyRule | Role, identity: Identity) -> tuple[list[str], ClaimShapeError | None]:
    """``rule.hits(identity)``, or the reason it cannot be evaluated."""
    try:
        return rule.hits(identity), None
    except ClaimShapeError as exc:
        return [], exc


def _unusable(exc: ClaimShapeError) -> str:
    return f"{exc}; the policy cannot be evaluated for this token (fix the IdP's claim mapping)"


def _describe(matcher: Matcher) -> str:
    return ", ".join(
        f"{p} in {sorted(r.values, key=str)}" + (" (split on spaces)" if r.split else "")
        for p, r in matcher.rules.items()
    )


def _refuse(code: ErrorCode, reason: str, role: Role | None = None) -> Decision:
    return Decision(allowed=False, code=code, reason=reason, role=role)


def _needs_check(role: Role, request: QueryRequest) -> bool:
    return (
        request.sql is not None
        and role.allow_sql
        and role.read_only
        and request.sql_bytes <= role.max_statement_bytes
    )


def _try_role(role: Role, request: QueryRequest, read_only: ReadOnlyVerdict | None) -> Decision:
    if request.query is not None:
        template = role.queries.get(request.query)
        if template is None:
            return _refuse(
                ErrorCode.POLICY_UNKNOWN_QUERY,
                f"role {role.name!r} has no named query {request.query[:100]!r}",
                role,
            )
        given, declared = set(request.params), set(template.params)
        if given != declared:
            missing, extra = sorted(declared - given), sorted(given - declared)
            return _refuse(
                ErrorCode.REQUEST_INVALID,
                f"named query {template.name!r} takes parameters {sorted(declared)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unexpected {[n[:64] for n in extra]}" if extra else ""),
                role,
            )
        return Decision(
            allowed=True,
            reason=f"role {role.name!r}: named query {template.name!r}",
            role=role,
            sql=template.sql,
            query=template.name,
            param_types=template.params,
        )
    assert request.sql is not None
    if not role.allow_sql:
        return _refuse(
            ErrorCode.POLICY_DENIED,
            f"role {role.name!r} runs named queries only (allow_sql = false)",
            role,
        )
    if request.sql_bytes > role.max_statement_bytes:
        return _refuse(
            ErrorCode.REQUEST_TOO_LARGE,
            f"role {role.name!r} accepts statements up to {role.max_statement_bytes} bytes "
            f"(UTF-8); this one is {request.sql_bytes}: send a shorter statement, pass values "
            "as parameters, or use a named query",
            role,
        )
    if role.read_only:
        assert read_only is not None  # authorize() computed it, or the caller passed it
        if not read_only.allowed:
            return _refuse(
                ErrorCode.POLICY_NOT_READ_ONLY, f"role {role.name!r}: {read_only.reason}", role
            )
    kind = "read-only SQL" if role.read_only else "ad-hoc SQL"
    return Decision(allowed=True, reason=f"role {role.name!r}: {kind}", role=role, sql=request.sql)


class _Loader:
    """Validates a policy document, collecting every problem with its file/table/key."""

    def __init__(self, source: str, prefix: str) -> None:
        self.source = source
        self.prefix = prefix
        self.problems: list[str] = []

    def problem(self, table: str, message: str) -> None:
        self.problems.append(f"{self.source}: [{self.prefix}{table}] {message}")

    def policy(self, doc: Mapping[str, Any]) -> Policy:
        for key in doc:
            if key not in ("roles", "deny"):
                self.problem(key, "unknown key (a policy has [roles.NAME] and [[deny]] tables)")
        roles_raw = doc.get("roles", {})
        roles: list[Role] = []
        if not isinstance(roles_raw, Mapping) or not roles_raw:
            self.problem("roles", "define at least one [roles.NAME] table")
        else:
            for name, raw in roles_raw.items():
                role = self.role(str(name), raw)
                if role is not None:
                    roles.append(role)
        deny: list[DenyRule] = []
        deny_raw = doc.get("deny", [])
        if not isinstance(deny_raw, list):
            self.problem("deny", "must be an array of tables: [[deny]] match = {...}")
        else:
            for i, raw in enumerate(deny_raw, start=1):
                rule = self.deny_rule(i, raw)
                if rule is not None:
                    deny.append(rule)
        if self.problems:
            raise PolicyError(self.problems)
        return Policy(roles, deny, source=self.source)

    def matcher(self, table: str, raw: Any, *, deny: bool = False) -> Matcher | None:
        if not isinstance(raw, Mapping) or not raw:
            example = '{ groups = ["analysts"] }'
            self.problem(table, f"key 'match': a table of claim path -> [values], e.g. {example}")
            return None
        rules: dict[str, ClaimRule] = {}
        for path, spec in raw.items():
            rule = self.claim_rule(table, str(path), spec)
            if rule is not None:
                rules[str(path)] = rule
        return Matcher(MappingProxyType(rules), fold=deny)

    def claim_rule(self, table: str, path: str, spec: Any) -> ClaimRule | None:
        where = f"key 'match.{path}'"
        split = False
        if isinstance(spec, Mapping):
            unknown = sorted(set(spec) - {"values", "split"})
            if unknown:
                self.problem(table, f"{where}: unknown key(s) {unknown} (allowed: values, split)")
                return None
            mode = spec.get("split")
            if mode is not None and mode != "space":
                self.problem(
                    table,
                    f'{where}: split = {mode!r} is not supported; the only mode is "space" (for '
                    f"a claim that is one space-delimited string, such as scope or scp)",
                )
                return None
            split = mode == "space"
            if split and (path in _LIST_CLAIMS or path.endswith(".roles")):
                self.problem(
                    table,
                    f'{where}: split = "space" is for a claim that is ONE space-delimited '
                    f"string (scope, scp); {path!r} is a list of names, each matched whole: "
                    f"remove split",
                )
                return None
            spec = spec.get("values")
        values = [spec] if isinstance(spec, str) else spec
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values)
        ):
            self.problem(table, f"{where}: a non-empty list of strings (or integers)")
            return None
        ok = True
        for value in values:
            if isinstance(value, str) and (not value or value != value.strip()):
                self.problem(
                    table,
                    f"{where}: value {value!r} is empty or has leading/trailing whitespace; "
                    f"claim values are matched exactly, so it would never match",
                )
                ok = False
            elif split and isinstance(value, str) and " " in value:
                self.problem(
                    table,
                    f'{where}: value {value!r} contains a space, but split = "space" splits the '
                    f"claim into single words, so it would never match",
                )
                ok = False
        return ClaimRule(frozenset(values), split=split) if ok else None

    def issuers(self, table: str, raw: Mapping[str, Any]) -> frozenset[str]:
        value = raw.get("issuers", [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(table, "key 'issuers': a list of issuer URLs")
            return frozenset()
        return frozenset(value)

    def deny_rule(self, index: int, raw: Any) -> DenyRule | None:
        table = f"deny #{index}"
        if not isinstance(raw, Mapping):
            self.problem(table, "must be a table")
            return None
        for key in raw:
            if key not in ("match", "issuers", "reason"):
                self.problem(table, f"unknown key {key!r} (allowed: match, issuers, reason)")
        match = self.matcher(table, raw.get("match"), deny=True)
        reason = raw.get("reason", "")
        if not isinstance(reason, str):
            self.problem(table, "key 'reason': a string")
            reason = ""
        if match is None:
            return None
        return DenyRule(index, match, self.issuers(table, raw), reason)

    def role(self, name: str, raw: Any) -> Role | None:
        table = f"roles.{name}"
        if not isinstance(raw, Mapping):
            self.problem(table, "must be a table")
            return None
        for key in raw:
            if key not in _ROLE_KEYS:
                hint = ""
                if key in ("password", "password_env", "password_file", "user"):
                    hint = "; credentials belong in connector.toml [logins.NAME], named by 'login'"
                self.problem(table, f"unknown key {key!r} (allowed: {sorted(_ROLE_KEYS)}){hint}")
        match = self.matcher(table, raw.get("match"))
        login = raw.get("login")
        if not isinstance(login, str) or not login:
            self.problem(table, "key 'login': the name of a [logins.NAME] table (required)")
        flags: dict[str, bool] = {}
        for key, default in (
            ("read_only", True),
            ("allow_sql", False),
            ("log_param_values", False),
        ):
            value = raw.get(key, default)
            if not isinstance(value, bool):
                self.problem(table, f"key {key!r}: true or false")
                value = default
            flags[key] = value
        caps: dict[str, int] = {}
        for cap, cap_default in _DEFAULT_CAPS.items():
            number = raw.get(cap, cap_default)
            most = _CAP_MAXIMUM.get(cap)
            if not isinstance(number, int) or isinstance(number, bool) or number <= 0:
                self.problem(table, f"key {cap!r}: a positive integer")
                number = cap_default
            elif most is not None and number > most:
                self.problem(table, f"key {cap!r}: at most {most}")
                number = cap_default
            caps[cap] = number
        max_sessions = raw.get("max_sessions")
        if max_sessions is not None and (
            not isinstance(max_sessions, int) or isinstance(max_sessions, bool) or max_sessions < 0
        ):
            self.problem(table, "key 'max_sessions': an integer >= 0 (0: no sessions)")
            max_sessions = None
        queries = self.queries(table, raw.get("queries", {}), read_only=flags["read_only"])
        if match is None or not isinstance(login, str) or not login:
            return None
        return Role(
            name=name,
            match=match,
            issuers=self.issuers(table, raw),
            login=login,
            queries=MappingProxyType(queries),
            read_only=flags["read_only"],
            allow_sql=flags["allow_sql"],
            log_param_values=flags["log_param_values"],
            max_rows=caps["max_rows"],
            max_bytes=caps["max_bytes"],
            timeout_ms=caps["timeout_ms"],
            max_statement_bytes=caps["max_statement_bytes"],
            max_concurrent_per_identity=caps["max_concurrent_per_identity"],
            max_sessions=max_sessions,
        )

    def queries(self, table: str, raw: Any, *, read_only: bool) -> dict[str, QueryTemplate]:
        if not isinstance(raw, Mapping):
            self.problem(table, "key 'queries': [roles.NAME.queries.QUERY] tables")
            return {}
        out = {}
        for qname, q in raw.items():
            where = f"{table}.queries.{qname}"
            if not isinstance(q, Mapping):
                self.problem(where, "must be a table with sql and params")
                continue
            for key in q:
                if key not in ("sql", "params"):
                    self.problem(where, f"unknown key {key!r} (allowed: sql, params)")
            sql, params = q.get("sql"), q.get("params", {})
            if not isinstance(sql, str) or not sql.strip():
                self.problem(where, "key 'sql': the statement text (required)")
                continue
            if not isinstance(params, Mapping) or not all(
                isinstance(t, str) and t for t in params.values()
            ):
                self.problem(where, "key 'params': { name = \"SQL Server type\", ... }")
                continue
            for pname in params:
                if f"@{pname}".lower() not in sql.lower():
                    self.problem(where, f"key 'params.{pname}': @{pname} does not occur in sql")
            if read_only:
                verdict = check_read_only(sql)
                if not verdict.allowed:
                    self.problem(where, f"key 'sql': the role is read_only but {verdict.reason}")
            out[str(qname)] = QueryTemplate(str(qname), sql, MappingProxyType(dict(params)))
        return out
