"""Where a load test sends its queries: the relay's HTTP API, or SQL Server directly.

- `HttpTarget`: ``POST {url}/v1/tunnels/{tunnel}/query`` over one HTTP/1.1 keep-alive
  connection per slot (a lean client, edgetds/loadtest/_http.py: the load generator's own CPU per
  query stays well below the service's). The NDJSON body is split by newline (never
  by chunk) and must end with exactly one terminal line (``{"done": ...}`` or ``{"error": ...}``);
  a body without one counts as the error ``truncated``. Row lines are counted, not parsed.
- `DirectTarget`: the same statements with python-tds, one connection per virtual-user slot, each
  call in a worker thread (``trio.to_thread.run_sync`` under a limiter), parameters bound through
  ``sp_executesql`` exactly as the connector binds them: the baseline of the tunnel's cost.
- `TokenSource`: one real IdP token per virtual user, minted by the dev IdP or read from a file.

Tokens and passwords are never logged or written to results, nor are parameter values, except
where an error's sample message (the first message per error code, as the relay or SQL Server sent
it) quotes one: SQL Server's conversion errors quote the value, which here is one the scenario
generated.
"""

from __future__ import annotations

import ipaddress
import json
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import trio

from edgetds.loadtest._http import HttpConnection, ResponseInvalid, ResponseTruncated
from edgetds.loadtest.scenario import Identity, QuerySpec
from edgetds.loadtest.stats import SAMPLE_MAX, QueryOutcome
from protocol import ErrorCode

__all__ = [
    "DirectSpec",
    "DirectTarget",
    "HttpTarget",
    "NdjsonCounter",
    "TargetError",
    "TokenSource",
    "check_loopback",
    "parse_direct",
    "read_all_rows",
    "run_like_connector",
]


class TargetError(ValueError):
    """A target, token source or connection string is unusable (the message says how to fix it)."""


def check_loopback(host: str, *, what: str, allow_remote: bool) -> None:
    """Refuse a non-loopback host unless ``allow_remote`` (load tests hit only what you name)."""
    if allow_remote:
        return
    name = host.strip("[]")
    if name == "localhost":
        return
    try:
        if ipaddress.ip_address(name).is_loopback:
            return
    except ValueError:
        pass
    raise TargetError(
        f"{what} host {host!r} is not a loopback address; a load test sends a lot of traffic, so "
        "it only targets 127.0.0.1/::1/localhost unless you pass --allow-remote"
    )


# ------------------------------------------------------------------------------------ tokens


class TokenSource:
    """Bearer tokens by virtual user (round robin over the list)."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if not tokens:
            raise TargetError("no tokens: the token file is empty")
        self.tokens = tuple(tokens)

    def for_vu(self, vu: int) -> str:
        return self.tokens[vu % len(self.tokens)]

    @classmethod
    def from_file(cls, path: str | Path) -> TokenSource:
        """One token per line (blank lines and lines starting with '#' are skipped)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise TargetError(f"--token-file {path}: cannot read it ({exc.strerror})") from None
        lines = [ln.strip() for ln in text.splitlines()]
        tokens = [ln for ln in lines if ln and not ln.startswith("#")]
        if not tokens:
            raise TargetError(f"--token-file {path}: no tokens in it (one JWT per line)")
        return cls(tokens)

    @classmethod
    def from_dev_idp(
        cls,
        key_dir: str | Path,
        identity: Identity,
        *,
        users: int,
        expires_in: int,
        issuer: str | None = None,
    ) -> TokenSource:
        """Mint one token per virtual user with the dev IdP's keys in ``key_dir``."""
        from edgetds.devidp import DevIdP

        key_dir = Path(key_dir)
        if not (key_dir / "keys.json").exists():
            raise TargetError(
                f"--dev-idp-key-dir {key_dir}: no keys.json there; start the dev IdP with "
                f"`edgetds dev-idp serve --key-dir {key_dir}` (or `edgetds demo --serve`)"
            )
        idp = DevIdP.from_key_dir(key_dir)
        if issuer:
            idp.issuer = issuer
        if not idp.issuer:
            raise TargetError(
                f"--dev-idp-key-dir {key_dir}: no 'issuer' file; pass --issuer URL (the dev IdP's "
                "URL the relay trusts)"
            )
        tokens = [
            idp.mint(
                sub=identity.subject(vu),
                groups=list(identity.groups),
                aud=identity.audience,
                expires_in=expires_in,
                alg=identity.alg,
            )
            for vu in range(max(1, users))
        ]
        return cls(tokens)


# -------------------------------------------------------------------------------------- HTTP


_JSON = (b"content-type", b"application/json")


def query_url(base: str, tunnel: str) -> str:
    return f"{base.rstrip('/')}/v1/tunnels/{tunnel}/query"


def _error_of(record: Any, status: int) -> tuple[str, str | None]:
    """The code and message of an ``{"error": {"code", "message"}}`` record; ``http.<status>``
    when the record has no code."""
    error = record.get("error") if isinstance(record, dict) else None
    if not isinstance(error, dict):
        return f"http.{status}", None
    code, message = error.get("code"), error.get("message")
    message = message if isinstance(message, str) and message else None
    if isinstance(code, str) and code:
        return code, message
    return f"http.{status}", message


def _error_outcome(body: bytes, status: int) -> QueryOutcome:
    """How a non-200 answer failed; a body that is not JSON (a proxy's page) is its sample."""
    try:
        code, message = _error_of(json.loads(body), status)
    except ValueError:
        text = body[:SAMPLE_MAX].decode("utf-8", "replace").strip()
        return QueryOutcome(f"http.{status}", 0, len(body), text or None)
    return QueryOutcome(code, 0, len(body), message)


_decode = msgspec.json.Decoder().decode


def _loads(line: bytes) -> Any:
    """``json.loads(line)``, an order of magnitude faster for the valid JSON a relay sends:
    msgspec first; what it refuses (NaN, 1e400, a lone surrogate, garbage) goes to json.loads,
    so a line is accepted, refused, and decoded to the same value as json.loads does it."""
    try:
        return _decode(line)
    except msgspec.DecodeError:
        return json.loads(line)


class NdjsonCounter:
    """Splits an NDJSON body by newline across chunks; counts rows, parses the `{...}` lines."""

    def __init__(self) -> None:
        self.partial = b""
        self.rows = 0
        self.terminal: dict[str, Any] | None = None
        self.extra_after_terminal = False
        self.bad_line = False
        #: bytes fed so far
        self.nbytes = 0

    def feed(self, chunk: bytes) -> None:
        self.nbytes += len(chunk)
        data = self.partial + chunk if self.partial else chunk
        end = data.rfind(b"\n")
        if end < 0:
            self.partial = data
            return
        self.partial = data[end + 1 :]
        complete = data[: end + 1]
        lines = complete.count(b"\n")
        # Record lines start with '{' (columns, done, error); row lines start with '['.
        starts = [0] if complete[:1] == b"{" else []
        pos = complete.find(b"\n{")
        while pos >= 0:
            starts.append(pos + 1)
            pos = complete.find(b"\n{", pos + 1)
        self.rows += lines - len(starts)
        if self.terminal is not None and lines:
            self.extra_after_terminal = True
        for start in starts:
            line = complete[start : complete.index(b"\n", start)]
            if line.startswith(b'{"columns"'):
                continue
            try:
                record = _loads(line)
            except ValueError:
                self.bad_line = True
                continue
            if isinstance(record, dict) and ("done" in record or "error" in record):
                if self.terminal is not None:
                    self.extra_after_terminal = True
                self.terminal = record
            else:
                self.bad_line = True

    def outcome(self, nbytes: int) -> QueryOutcome:
        if self.terminal is None or self.partial:
            return QueryOutcome("truncated", self.rows, nbytes)
        if self.extra_after_terminal or self.bad_line:
            return QueryOutcome("client.bad_ndjson", self.rows, nbytes)
        if "error" in self.terminal:
            code, message = _error_of(self.terminal, 200)
            return QueryOutcome(code, self.rows, nbytes, message)
        done = self.terminal["done"]
        if isinstance(done, dict) and isinstance(done.get("rows"), int):
            if done["rows"] != self.rows:
                return QueryOutcome("client.rows_mismatch", self.rows, nbytes)
        return QueryOutcome(None, self.rows, nbytes)


#: the request body's JSON (compact, like ``json.dumps(separators=(",", ":"))``; text as UTF-8)
_encode = msgspec.json.Encoder().encode


class HttpTarget:
    """Sends scenario queries to the relay's HTTP API (see module docstring): one keep-alive
    connection per slot (edgetds/loadtest/_http.py), opened on the slot's first query."""

    def __init__(self, base_url: str, tunnel: str, tokens: TokenSource) -> None:
        self.base_url = base_url
        self.path = urlsplit(query_url(base_url, tunnel)).path
        self.tokens = tokens
        self._conns: dict[int, HttpConnection] = {}
        self._headers = [
            ((b"authorization", b"Bearer " + token.encode()), _JSON) for token in tokens.tokens
        ]

    async def __call__(
        self, slot: int, vu: int, query: QuerySpec, rng: random.Random
    ) -> QueryOutcome:
        body = _encode(query.http_body(rng))
        conn = self._conns.get(slot)
        if conn is None:
            conn = self._conns[slot] = HttpConnection(self.base_url)
        counter = NdjsonCounter()
        try:
            status, other = await conn.post(
                self.path, self._headers[vu % len(self._headers)], body, counter.feed
            )
        except ResponseInvalid as exc:
            return QueryOutcome("truncated", 0, counter.nbytes, str(exc))
        except ResponseTruncated:
            return QueryOutcome(
                "truncated", 0, counter.nbytes, "the relay closed the response early"
            )
        except (OSError, trio.BrokenResourceError) as exc:
            kind = "ReadError" if isinstance(exc, trio.BrokenResourceError) else "ConnectError"
            return QueryOutcome("client." + kind, 0, counter.nbytes, str(exc) or None)
        if status != 200:
            return _error_outcome(other, status)
        return counter.outcome(counter.nbytes)

    async def aclose(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            await conn.aclose()


# ------------------------------------------------------------------------------------ direct


@dataclass(frozen=True)
class DirectSpec:
    host: str
    port: int
    user: str
    password: str = ""
    database: str = ""

    def __repr__(self) -> str:  # never show the password
        return f"DirectSpec({self.user}@{self.host}:{self.port}/{self.database})"

    def connect(self, *, timeout: float, appname: str, **options: Any) -> Any:
        """A python-tds connection (autocommit) to this database; ``options`` go to
        ``pytds.connect`` as they are."""
        import pytds

        return pytds.connect(
            dsn=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=self.database or None,
            autocommit=True,
            timeout=timeout,
            appname=appname,
            **options,
        )


def parse_direct(text: str) -> DirectSpec:
    """Parse ``host=..;port=..;user=..;password=..;database=..`` (password may be @FILE)."""
    fields: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in {"host", "port", "user", "password", "database"}:
            raise TargetError(
                f"--direct: bad item {key or part!r}; expected "
                '"host=127.0.0.1;port=1433;user=reader;password=...;database=sample"'
            )
        fields[key] = value.strip()
    for key in ("host", "user"):
        if not fields.get(key):
            raise TargetError(f"--direct: {key}= is missing")
    try:
        port = int(fields.get("port", "1433"))
    except ValueError:
        raise TargetError("--direct: port= must be a number") from None
    password = fields.get("password", "")
    if password.startswith("@"):
        try:
            password = Path(password[1:]).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TargetError(f"--direct: password file: {exc.strerror}") from None
    return DirectSpec(fields["host"], port, fields["user"], password, fields.get("database", ""))


def _drain(cursor: Any) -> None:
    while cursor.nextset():
        pass


def read_all_rows(cursor: Any) -> int:
    """Read every row of every result set of the statement ``cursor`` ran; how many there were."""
    rows = 0
    while True:
        if cursor.description:
            while batch := cursor.fetchmany(1000):
                rows += len(batch)
        if not cursor.nextset():
            return rows


def run_like_connector(cursor: Any, sql: str, params: Any) -> None:
    """What the connector sends for a one-shot query (connector/execute.py), with placeholder
    context values: the reset as the TDS RESETCONNECTION flag, the session context, and the
    statement; in one request for a statement the read-only check classifies as one plain
    SELECT (the connector does so for a role with that check), else in two."""
    from connector.encode import BoundParam
    from connector.execute import (
        CONTEXT_KEYS,
        preamble_batch,
        reset_connection_flag,
        run_statement,
        send_context_with,
    )
    from connector.policy import check_read_only

    ctx = [BoundParam(f"@c{i}", "nvarchar(4000)", "loadtest") for i in range(len(CONTEXT_KEYS))]
    sess = cursor._session
    if check_read_only(sql).allowed:
        with reset_connection_flag(sess):
            send_context_with(sess, ctx, sql, params)
        sess.find_result_or_done()
        return
    with reset_connection_flag(sess):
        run_statement(cursor, preamble_batch(), ctx)
    _drain(cursor)
    run_statement(cursor, sql, params)


class DirectTarget:
    """Runs scenario queries straight against SQL Server with python-tds (the baseline)."""

    def __init__(
        self, spec: DirectSpec, *, slots: int, timeout_s: float, like_connector: bool = False
    ) -> None:
        self.spec = spec
        self.timeout_s = timeout_s
        #: also send what the connector sends with each statement (the sp_set_session_context
        #: keys, on a request that resets the session, in the same request for a plain SELECT):
        #: a baseline doing the connector's database work
        self.like_connector = like_connector
        self.limiter = trio.CapacityLimiter(max(1, slots))
        self._conns: dict[int, Any] = {}
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        return self.spec.connect(
            timeout=self.timeout_s,
            appname="edgetds-loadtest",
            login_timeout=10,
            disable_connect_retry=True,
        )

    def _run(self, slot: int, sql: str, params: Any) -> QueryOutcome:
        from pytds import tds_base

        from connector.execute import run_statement  # the connector's exact binding

        with self._lock:
            conn = self._conns.pop(slot, None)
        try:
            if conn is None:
                conn = self._connect()
            with conn.cursor() as cursor:
                if self.like_connector:
                    run_like_connector(cursor, sql, params)
                else:
                    run_statement(cursor, sql, params)
                rows = read_all_rows(cursor)
        except tds_base.Error as exc:
            code = (
                ErrorCode.SQL_ERROR if isinstance(exc, tds_base.DatabaseError) else "direct.error"
            )
            if isinstance(exc, tds_base.OperationalError | tds_base.InterfaceError):
                conn = None  # the connection may be broken: open a new one next time
            number = getattr(exc, "msg_no", 0)
            return QueryOutcome(code, 0, 0, f"{number}: {exc}" if number else str(exc))
        except OSError as exc:
            return QueryOutcome("direct.transport", 0, 0, str(exc))
        with self._lock:
            self._conns[slot] = conn
        return QueryOutcome(None, rows, 0)

    async def __call__(
        self, slot: int, vu: int, query: QuerySpec, rng: random.Random
    ) -> QueryOutcome:
        from connector.encode import ParamError, decode_params

        sql = query.sql_for_direct()
        if sql is None:
            return QueryOutcome("direct.no_sql")
        try:
            params = decode_params(query.make_params(rng))
        except ParamError:
            return QueryOutcome(ErrorCode.REQUEST_INVALID)
        return await trio.to_thread.run_sync(self._run, slot, sql, params, limiter=self.limiter)

    def close(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing best effort at the end of a run
                pass
