"""Load-test scenarios: a TOML file parsed into frozen objects, plus the weighted query picker.

A scenario says WHAT to send (weighted queries with parameter generators) and HOW MUCH (closed-loop
concurrency or an open-loop target rate, a duration or a count, a ramp-up). Example::

    [load]
    concurrency = 8          # closed loop: 8 virtual users, each sends, waits, sends again
    # rate = 200             # open loop instead: start 200 queries/s (concurrency caps in-flight)
    duration_s = 10          # or: count = 1000 (total queries)
    ramp_up_s = 2
    timeout_s = 30

    [identity]               # tokens minted by the dev IdP (with --dev-idp-key-dir)
    sub = "loadtest-{vu}"    # {vu} = virtual user number
    groups = ["analysts"]
    audience = "edgetds"

    [[queries]]
    name = "customer by id"
    weight = 5
    sql = "SELECT id, name FROM customers WHERE id = @id"
    params = { id = { int = [1, 24] } }

Parameter generators (a table with exactly one generator key, and an optional ``type``):
``{ int = [lo, hi] }``, ``{ float = [lo, hi] }``, ``{ choice = [a, b, ...] }``,
``{ uuid = true }``, ``{ string = "cust-####-???" }`` (``#`` digit, ``?`` lowercase letter, ``*``
letter or digit, anything else literal), ``{ sequence = start }``. A bare value is a constant.
With ``type = "decimal(18,2)"`` the value is sent as the HTTP API's typed parameter
``{"type": ..., "value": ...}``. Errors name the file and the key that is wrong.
"""

from __future__ import annotations

import bisect
import itertools
import random
import string
import tomllib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "Generator",
    "Identity",
    "Load",
    "QuerySpec",
    "Scenario",
    "ScenarioError",
    "WeightedPicker",
    "load_scenario",
    "parse_scenario",
]

GENERATOR_KEYS = ("int", "float", "choice", "uuid", "string", "sequence")
_PATTERN_CHARS = {
    "#": string.digits,
    "?": string.ascii_lowercase,
    "*": string.ascii_letters + "0123456789",
}


class ScenarioError(ValueError):
    """The scenario file is wrong; the message names the key and says how to fix it."""


def _fail(where: str, message: str) -> ScenarioError:
    return ScenarioError(f"{where}: {message}")


@dataclass(frozen=True)
class Generator:
    """Produces one parameter value per call; ``describe`` is for reports (never values)."""

    kind: str
    make: Callable[[random.Random], Any] = field(repr=False, compare=False)
    sql_type: str | None = None

    def __call__(self, rng: random.Random) -> Any:
        value = self.make(rng)
        if self.sql_type is None:
            return value
        return {"type": self.sql_type, "value": value}


@dataclass(frozen=True)
class QuerySpec:
    name: str
    weight: float
    sql: str | None
    query: str | None
    params: Mapping[str, Generator]
    #: SQL used by --direct for a named query (the connector's policy holds the real text)
    direct_sql: str | None = None
    max_rows: int | None = None

    def make_params(self, rng: random.Random) -> dict[str, Any]:
        return {name: gen(rng) for name, gen in self.params.items()}

    def http_body(self, rng: random.Random) -> dict[str, Any]:
        body: dict[str, Any] = {"params": self.make_params(rng)}
        if self.sql is not None:
            body["sql"] = self.sql
        else:
            body["query"] = self.query
        if self.max_rows is not None:
            body["max_rows"] = self.max_rows
        return body

    def sql_for_direct(self) -> str | None:
        return self.sql if self.sql is not None else self.direct_sql


@dataclass(frozen=True)
class Load:
    concurrency: int = 1
    rate: float | None = None  # open loop when set (queries/s); concurrency caps in-flight
    duration_s: float | None = None
    count: int | None = None
    ramp_up_s: float = 0.0
    timeout_s: float = 30.0

    @property
    def mode(self) -> str:
        return "open" if self.rate is not None else "closed"


@dataclass(frozen=True)
class Identity:
    sub: str = "loadtest-{vu}"
    groups: tuple[str, ...] = ("analysts",)
    audience: str = "edgetds"
    alg: str = "RS256"

    def subject(self, vu: int) -> str:
        return self.sub.replace("{vu}", str(vu))


@dataclass(frozen=True)
class Scenario:
    name: str
    load: Load
    identity: Identity
    queries: tuple[QuerySpec, ...]
    seed: int | None = None

    def with_load(
        self,
        *,
        concurrency: int | None = None,
        rate: float | None = None,
        duration_s: float | None = None,
        count: int | None = None,
    ) -> Scenario:
        """A copy with the command line's overrides: ``concurrency`` alone means closed loop,
        ``rate`` means open loop; ``duration_s`` and ``count`` replace each other."""
        load = self.load
        if concurrency is not None:
            load = replace(load, concurrency=concurrency, rate=rate)
        elif rate is not None:
            load = replace(load, rate=rate)
        if duration_s is not None:
            load = replace(load, duration_s=duration_s, count=None)
        elif count is not None:
            load = replace(load, count=count, duration_s=None)
        return replace(self, load=_check_load(load, "command line"))


class WeightedPicker:
    """Picks a query with probability weight / sum(weights) (cumulative table + bisect)."""

    def __init__(self, queries: Sequence[QuerySpec]) -> None:
        if not queries:
            raise ScenarioError("queries: at least one [[queries]] entry is needed")
        self.queries = tuple(queries)
        self._cumulative = list(itertools.accumulate(q.weight for q in self.queries))
        self._total = self._cumulative[-1]

    def pick(self, rng: random.Random) -> QuerySpec:
        index = bisect.bisect_right(self._cumulative, rng.random() * self._total)
        return self.queries[min(index, len(self.queries) - 1)]


# ------------------------------------------------------------------------------------ parsing


def _number(where: str, value: Any, *, integer: bool = False, minimum: float = 0) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok:
        kind = "an integer" if integer else "a number"
        raise _fail(where, f"must be {kind}, got {value!r}")
    if value < minimum:
        raise _fail(where, f"must be >= {minimum}, got {value!r}")
    return value


def _pattern(where: str, pattern: Any) -> Callable[[random.Random], str]:
    if not isinstance(pattern, str) or not pattern:
        raise _fail(where, 'must be a non-empty pattern string, e.g. "cust-####"')
    parts = [_PATTERN_CHARS.get(ch) or ch for ch in pattern]

    def make(rng: random.Random) -> str:
        return "".join(rng.choice(p) if len(p) > 1 else p for p in parts)

    return make


def _generator(where: str, spec: Any) -> Generator:
    if not isinstance(spec, dict):
        if isinstance(spec, list):
            raise _fail(where, "a list is not a parameter value; use { choice = [...] }")
        constant: Any = spec
        return Generator("constant", lambda _rng: constant)
    sql_type = spec.get("type")
    if sql_type is not None and not isinstance(sql_type, str):
        raise _fail(f"{where}.type", 'must be a SQL Server type name, e.g. "decimal(18,2)"')
    keys = [k for k in spec if k != "type"]
    unknown = [k for k in keys if k not in GENERATOR_KEYS]
    if unknown or len(keys) != 1:
        raise _fail(
            where,
            f"needs exactly one generator key out of {', '.join(GENERATOR_KEYS)} "
            f"(got {', '.join(keys) or 'none'})",
        )
    kind = keys[0]
    arg = spec[kind]
    at = f"{where}.{kind}"
    make: Callable[[random.Random], Any]
    if kind in ("int", "float"):
        if not isinstance(arg, list) or len(arg) != 2:
            raise _fail(at, f"must be [low, high], e.g. {kind} = [1, 100]")
        lo, hi = (_number(at, v, integer=kind == "int", minimum=float("-inf")) for v in arg)
        if lo > hi:
            raise _fail(at, f"low {lo} is greater than high {hi}")
        if kind == "int":
            make = lambda rng: rng.randint(lo, hi)  # noqa: E731
        else:
            make = lambda rng: rng.uniform(lo, hi)  # noqa: E731
    elif kind == "choice":
        if not isinstance(arg, list) or not arg:
            raise _fail(at, 'must be a non-empty list, e.g. choice = ["north", "south"]')
        options = list(arg)
        make = lambda rng: rng.choice(options)  # noqa: E731
    elif kind == "uuid":
        if arg is not True:
            raise _fail(at, "must be true")
        make = lambda rng: str(uuid.UUID(int=rng.getrandbits(128), version=4))  # noqa: E731
    elif kind == "string":
        make = _pattern(at, arg)
    else:  # sequence
        counter = itertools.count(_number(at, arg, integer=True, minimum=float("-inf")))
        make = lambda _rng: next(counter)  # noqa: E731
    return Generator(kind, make, sql_type)


def _query(index: int, raw: Any) -> QuerySpec:
    where = f"queries[{index}]"
    if not isinstance(raw, dict):
        raise _fail(where, "must be a table ([[queries]])")
    allowed = {"name", "weight", "sql", "query", "params", "direct_sql", "max_rows"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise _fail(f"{where}.{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
    sql, named = raw.get("sql"), raw.get("query")
    if (sql is None) == (named is None):
        raise _fail(where, 'give exactly one of sql = "SELECT ..." or query = "<named query>"')
    for key, value in (("sql", sql), ("query", named), ("direct_sql", raw.get("direct_sql"))):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise _fail(f"{where}.{key}", "must be a non-empty string")
    name = raw.get("name", named or f"query {index}")
    if not isinstance(name, str):
        raise _fail(f"{where}.name", "must be a string")
    weight = _number(f"{where}.weight", raw.get("weight", 1))
    if weight <= 0:
        raise _fail(f"{where}.weight", "must be > 0")
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise _fail(f"{where}.params", "must be a table { name = generator, ... }")
    gens = {k: _generator(f"{where}.params.{k}", v) for k, v in params.items()}
    max_rows = raw.get("max_rows")
    if max_rows is not None:
        max_rows = _number(f"{where}.max_rows", max_rows, integer=True, minimum=1)
    return QuerySpec(name, float(weight), sql, named, gens, raw.get("direct_sql"), max_rows)


def _check_load(load: Load, where: str) -> Load:
    if load.concurrency < 1:
        raise _fail(f"{where}: load.concurrency", "must be >= 1")
    if load.rate is not None and load.rate <= 0:
        raise _fail(f"{where}: load.rate", "must be > 0 (queries per second)")
    if (load.duration_s is None) == (load.count is None):
        raise _fail(
            f"{where}: load",
            "give exactly one of duration_s (seconds) or count (queries): "
            "a run must stop by itself",
        )
    return load


def _load(raw: Any) -> Load:
    if not isinstance(raw, dict):
        raise _fail("load", "must be a table [load]")
    allowed = set(Load.__dataclass_fields__)
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise _fail(f"load.{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
    values: dict[str, Any] = {}
    for key in ("concurrency", "count"):
        if key in raw:
            values[key] = _number(f"load.{key}", raw[key], integer=True, minimum=1)
    for key in ("rate", "duration_s", "timeout_s"):
        if key in raw:
            values[key] = float(_number(f"load.{key}", raw[key], minimum=float("-inf")))
            if values[key] <= 0:
                raise _fail(f"load.{key}", "must be > 0")
    if "ramp_up_s" in raw:
        values["ramp_up_s"] = float(_number("load.ramp_up_s", raw["ramp_up_s"]))
    return _check_load(Load(**values), "scenario")


def _identity(raw: Any) -> Identity:
    if not isinstance(raw, dict):
        raise _fail("identity", "must be a table [identity]")
    allowed = {"sub", "groups", "audience", "alg"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise _fail(f"identity.{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
    groups = raw.get("groups", ["analysts"])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise _fail("identity.groups", 'must be a list of strings, e.g. ["analysts"]')
    for key in ("sub", "audience", "alg"):
        if key in raw and not isinstance(raw[key], str):
            raise _fail(f"identity.{key}", "must be a string")
    return Identity(
        sub=raw.get("sub", Identity.sub),
        groups=tuple(groups),
        audience=raw.get("audience", Identity.audience),
        alg=raw.get("alg", Identity.alg),
    )


def parse_scenario(data: Mapping[str, Any], *, name: str = "scenario") -> Scenario:
    """Build a `Scenario` from parsed TOML.

    Raises:
        ScenarioError: a key is missing, unknown or of the wrong type (the message names it).
    """
    unknown = sorted(set(data) - {"name", "seed", "load", "identity", "queries"})
    if unknown:
        raise _fail(
            unknown[0], "unknown top-level key; allowed: name, seed, load, identity, queries"
        )
    if "load" not in data:
        raise _fail("load", "missing [load] table (concurrency, duration_s or count, ...)")
    raw_queries = data.get("queries")
    if not isinstance(raw_queries, list) or not raw_queries:
        raise _fail("queries", 'missing: add at least one [[queries]] with sql = "SELECT ..."')
    seed = data.get("seed")
    if seed is not None:
        seed = _number("seed", seed, integer=True, minimum=float("-inf"))
    title = data.get("name", name)
    if not isinstance(title, str):
        raise _fail("name", "must be a string")
    return Scenario(
        name=title,
        load=_load(data["load"]),
        identity=_identity(data.get("identity", {})),
        queries=tuple(_query(i, q) for i, q in enumerate(raw_queries)),
        seed=seed,
    )


def load_scenario(path: str | Path) -> Scenario:
    """Read and parse a scenario TOML file (errors are prefixed with the file name)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_scenario(data, name=path.stem)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
