"""Who may run what: map a verified identity to a least-privilege role, and authorize each query.

Policy document (a policy TOML file, or the same tables inline under ``[policy]`` in
connector.toml)::

    [[deny]]                                   # deny rules beat every role
    match = { groups = ["contractors"] }
    reason = "contractors have no database access"

    [roles.analyst]                            # roles are tried in file order (see below)
    match = { groups = ["analysts"], "realm_access.roles" = ["analyst"], scp = ["db.read"] }
    issuers = ["https://login.example.com/v2.0"]   # optional: only tokens from these issuers
    login = "reader"            # a [logins.reader] table of connector.toml (user + password_env
                                # or password_file); credentials never come from the relay
    read_only = true            # default true: everything this role runs must be one plain SELECT
    allow_sql = true            # default false: ad-hoc SQL allowed (else named queries only)
    max_rows = 10000            # default 100000
    max_bytes = 16777216        # default 64 MiB of encoded rows
    timeout_ms = 30000          # default 30000
    max_concurrent_per_identity = 32   # default 32: one identity's queries running or waiting
                                # at this connector; more are refused (limits.too_many_queries)
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
matches when ANY listed path holds ANY listed value. Claim values may be a list (strings or
numbers) or a string, which is split on whitespace (OAuth ``scp``/``scope``); ``sub`` and
``iss`` work as paths too.

Choosing a role (deterministic): deny rules first (any match refuses with ``policy.denied``);
then the matching roles are tried in FILE ORDER and the first that permits the request is used.
List roles from least to most privileged, so a person in both ``analysts`` and ``admins`` runs
reads as the analyst and only a write as the admin. When no matching role permits the request
the refusal is the first matching role's (``policy.not_read_only``, ``policy.unknown_query``,
``policy.denied``); with no matching role at all it is ``policy.denied``. Refusal reasons name
roles, claims and keywords, never parameter values.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from connector._readonly import check_read_only
from edgetds.oidc import Identity, claim_at

__all__ = [
    "Decision",
    "DenyRule",
    "Policy",
    "PolicyError",
    "QueryRequest",
    "QueryTemplate",
    "Role",
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
    "max_concurrent_per_identity",
    "log_param_values",
    "queries",
}
_DEFAULT_CAPS = {
    "max_rows": 100_000,
    "max_bytes": 64 * 1024 * 1024,
    "timeout_ms": 30_000,
    "max_concurrent_per_identity": 32,
}


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


@dataclass(frozen=True)
class Matcher:
    """claim path -> accepted values; matches when any path holds any value."""

    rules: Mapping[str, frozenset[str]]

    def hits(self, identity: Identity) -> list[str]:
        """``path=value`` for every (path, value) pair that matched (empty: no match)."""
        found = []
        for path, accepted in self.rules.items():
            for value in sorted(claim_values(identity, path) & accepted):
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
    #: queries one identity (issuer + subject) may have running or waiting at this connector
    max_concurrent_per_identity: int = _DEFAULT_CAPS["max_concurrent_per_identity"]
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
            f"{self.max_bytes} bytes, {self.timeout_ms} ms; parameter values "
            f"{'logged' if self.log_param_values else 'redacted'} in the audit log"
        )


@dataclass(frozen=True, kw_only=True)
class QueryRequest:
    """What a client asked to run: ad-hoc ``sql`` or a named ``query``, with parameters."""

    sql: str | None = None
    query: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Decision:
    """The outcome of :meth:`Policy.authorize`.

    When ``allowed``: ``role`` runs ``sql`` (the ad-hoc text or the template's SQL) with
    ``param_types`` (declared template types; empty for ad-hoc SQL). When refused: ``code`` is a
    FIXED protocol error code and ``reason`` explains it without echoing parameter values.
    """

    allowed: bool
    reason: str
    code: str | None = None
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


def claim_values(identity: Identity, path: str) -> frozenset[str]:
    """The claim at ``path`` as a set of strings (lists flattened, strings split on whitespace)."""
    value = claim_at(identity.claims, path)
    items = value if isinstance(value, list) else [value]
    out: set[str] = set()
    for item in items:
        if isinstance(item, str):
            out.update(item.split())
        elif isinstance(item, int | float) and not isinstance(item, bool):
            out.add(str(item))
    return frozenset(out)


class Policy:
    """Roles and deny rules loaded from TOML. Immutable after loading."""

    def __init__(self, roles: list[Role], deny: list[DenyRule], *, source: str) -> None:
        self.roles = tuple(roles)
        self.deny = tuple(deny)
        self.source = source

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

    def authorize(self, identity: Identity, request: QueryRequest) -> Decision:
        """Pick the role for this identity and request, or refuse (see module docstring)."""
        if (request.sql is None) == (request.query is None):
            return _refuse("request.invalid", "send exactly one of 'sql' or 'query'")
        for rule in self.deny:
            hits = rule.hits(identity)
            if hits:
                why = f": {rule.reason}" if rule.reason else ""
                return _refuse(
                    "policy.denied", f"denied by deny rule #{rule.index} ({hits[0]}){why}"
                )
        matching = [role for role in self.roles if role.hits(identity)]
        if not matching:
            return _refuse(
                "policy.denied",
                f"no role matches subject {identity.subject!r} of issuer {identity.issuer!r}; "
                f"run `edgetds connector explain` to see which claims the roles look at",
            )
        first: Decision | None = None
        for role in matching:
            decision = _try_role(role, request)
            if decision.allowed:
                return decision
            first = first or decision
        assert first is not None
        return first

    def explain(self, identity: Identity) -> str:
        """Human-readable: which deny rules and roles this identity matches, and why."""
        lines = [
            f"subject {identity.subject!r}, issuer {identity.issuer!r} (policy {self.source})",
        ]
        paths = sorted(
            {p for r in self.roles for p in r.match.rules}
            | {p for d in self.deny for p in d.match.rules}
        )
        for path in paths:
            values = sorted(claim_values(identity, path))
            lines.append(f"  claim {path}: {values if values else '(absent)'}")
        denied = False
        for rule in self.deny:
            hits = rule.hits(identity)
            if hits:
                denied = True
                lines.append(f"DENIED by deny rule #{rule.index} ({', '.join(hits)}) {rule.reason}")
        chosen = None
        for role in self.roles:
            hits = role.hits(identity)
            if not hits:
                why = f"needs one of {_describe(role.match)}"
                if role.issuers and identity.issuer not in role.issuers:
                    why = f"only for issuers {sorted(role.issuers)}"
                lines.append(f"  role {role.name}: no match ({why})")
                continue
            mark = "" if chosen or denied else "  <- first match, tried first"
            chosen = chosen or role
            lines.append(f"  role {role.name}: MATCH via {', '.join(hits)}{mark}")
            lines.append(f"      {role.summary()}")
        if denied:
            lines.append("result: every query is refused (policy.denied)")
        elif chosen is None:
            lines.append("result: no role matches; every query is refused (policy.denied)")
        else:
            lines.append(
                "result: each query uses the first matching role (file order) that permits it"
            )
        return "\n".join(lines)


def _describe(matcher: Matcher) -> str:
    return ", ".join(f"{p} in {sorted(v)}" for p, v in matcher.rules.items())


def _refuse(code: str, reason: str, role: Role | None = None) -> Decision:
    return Decision(allowed=False, code=code, reason=reason, role=role)


def _try_role(role: Role, request: QueryRequest) -> Decision:
    if request.query is not None:
        template = role.queries.get(request.query)
        if template is None:
            return _refuse(
                "policy.unknown_query",
                f"role {role.name!r} has no named query {request.query[:100]!r}",
                role,
            )
        given, declared = set(request.params), set(template.params)
        if given != declared:
            missing, extra = sorted(declared - given), sorted(given - declared)
            return _refuse(
                "request.invalid",
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
            "policy.denied",
            f"role {role.name!r} runs named queries only (allow_sql = false)",
            role,
        )
    if role.read_only:
        verdict = check_read_only(request.sql)
        if not verdict.allowed:
            return _refuse("policy.not_read_only", f"role {role.name!r}: {verdict.reason}", role)
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

    def matcher(self, table: str, raw: Any) -> Matcher | None:
        if not isinstance(raw, Mapping) or not raw:
            example = '{ groups = ["analysts"] }'
            self.problem(table, f"key 'match': a table of claim path -> [values], e.g. {example}")
            return None
        rules: dict[str, frozenset[str]] = {}
        for path, values in raw.items():
            if isinstance(values, str):
                values = [values]
            if (
                not isinstance(values, list)
                or not values
                or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values)
            ):
                self.problem(table, f"key 'match.{path}': a non-empty list of strings")
                continue
            rules[str(path)] = frozenset(str(v) for v in values)
        return Matcher(MappingProxyType(rules))

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
        match = self.matcher(table, raw.get("match"))
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
            if not isinstance(number, int) or isinstance(number, bool) or number <= 0:
                self.problem(table, f"key {cap!r}: a positive integer")
                number = cap_default
            caps[cap] = number
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
            max_concurrent_per_identity=caps["max_concurrent_per_identity"],
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
