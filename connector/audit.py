"""The connector's audit log: one hash-chained JSON line per query, and its verification (the
`edgetds audit verify` command is connector/audit_cli.py).

Record (one line, keys sorted)::

    {"v": 1, "seq": 42, "time": "2026-11-27T00:01:02.345Z", "query_id": "...",
     "subject": "alice", "issuer": "https://idp", "role": "analyst",
     "statement": {"sql": "SELECT ..."} | {"query": "orders_by_customer"},
     "fingerprint": "<sha256 hex of the normalized SQL>",
     "params": [{"name": "id", "type": "bigint"}, ...],   # + "value" only if the role allows
     "outcome": {"status": "ok" | "error" | "refused", "rows": n, "bytes": n, "duration_ms": n,
                 "error_code": "policy.not_read_only" | null, "sql_error_number": 208 | null},
     "prev": "<hash of the previous record>", "hash": "<this record's hash>"}

Chain: ``hash = sha256(b"edgetds/1 audit\\n" + canonical_json(record without "hash"))`` in hex,
where canonical_json is the protocol's (sorted keys, no spaces, UTF-8; no floats in records).
The first record of a chain has ``prev`` = 64 zeros (GENESIS) and ``seq`` = 1. Each line is
exactly canonical_json(record with "hash") + "\\n". Reopening a file continues its chain from the
last line; :meth:`AuditLog.rotate` continues it into a new file, so ``verify old new`` checks
both as one chain. Removing, editing, reordering or truncating lines breaks the chain at the
first affected line, which ``edgetds audit verify`` reports (exit 1).

Rotation (``[audit] rotate_bytes``, and SIGHUP): :meth:`AuditLog.rotate_now` renames the file to
``<name>.<seq of its last record, 12 digits>`` (``audit.jsonl.000000001234``) and starts an empty
``<name>`` whose first record chains from that last one; the rotated names sort in chain order, so
``edgetds audit verify audit.jsonl.* audit.jsonl`` checks the whole chain. A connector that starts
on an empty or missing file continues from the newest rotated file beside it.

Removing lines from the END still leaves a valid chain. The signed checkpoints the connector sends
the relay (connector/checkpoints.py, SPEC.md 5.2) catch that: ``verify --checkpoint`` compares the
files with the relay's latest one (:func:`check_checkpoint`).

Durability (``fsync``): ``"always"`` (default; fsync after every write: one record, or the group of
records concurrent queries queued while the previous write ran, see `AuditLog.write`; a query's
record is on disk before its task goes on), ``"interval"`` (at most every ``fsync_interval_s``,
and on close), ``"never"`` (leave it to the OS).
Parameter values are written only when the role sets ``log_param_values = true``.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from protocol import canonical_json
from protocol import param_type as _protocol_param_type

if TYPE_CHECKING:
    from connector._thread import WorkerThread

__all__ = [
    "GENESIS",
    "AuditError",
    "AuditLog",
    "AuditOutcome",
    "VerifyResult",
    "param_type",
    "query_record",
    "record_hash",
    "verify_files",
]

log = logging.getLogger("edgetds.connector.audit")

GENESIS = "0" * 64
_DOMAIN = b"edgetds/1 audit\n"
_TAIL_BYTES = 1 << 20
FsyncPolicy = Literal["always", "interval", "never"]


class AuditError(Exception):
    """The audit log cannot be written (or its existing tail is broken)."""


def record_hash(record: Mapping[str, Any]) -> str:
    """The chain hash of ``record`` (its "hash" key, if present, is not covered)."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(_DOMAIN + canonical_json(body)).hexdigest()


@dataclass(frozen=True, kw_only=True)
class AuditOutcome:
    """How a query ended. ``status``: ok, error (SQL/timeout/cancel...) or refused (auth/policy)."""

    status: Literal["ok", "error", "refused"]
    rows: int = 0
    bytes: int = 0
    duration_ms: int = 0
    error_code: str | None = None
    sql_error_number: int | None = None


def _fingerprint(text: str) -> str:
    # imported here: `edgetds audit ...` and `edgetds --help` need no SQL parser (sqlglot)
    from connector._readonly import sql_fingerprint

    return sql_fingerprint(text)


def param_type(value: Any) -> str:
    """The SQL Server type a parameter binds as (protocol.param_type), for the audit record.

    ``"null"`` for an untyped NULL and ``"invalid"`` for a value the protocol refuses.
    """
    try:
        return _clean(_protocol_param_type(value) or "null")[:64]
    except ValueError:
        return "invalid"


def query_record(
    *,
    query_id: str,
    subject: str | None,
    issuer: str | None,
    role: str | None,
    sql: str | None,
    query: str | None,
    params: Mapping[str, Any],
    outcome: AuditOutcome,
    param_types: Mapping[str, str] | None = None,
    log_param_values: bool = False,
    statement_sql: str | None = None,
    session: Mapping[str, Any] | None = None,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """An audit record (without seq/time/prev/hash, which :meth:`AuditLog.write` adds).

    ``sql`` is the ad-hoc text or None; ``query`` the named query or None; ``statement_sql`` the
    SQL actually run for a named query (fingerprinted, not logged: the template lives in policy).
    ``session``: for a session operation, ``{"id", "op", ...}`` (SPEC.md 7.4); the record has a
    ``session`` member only then. ``fingerprint``: the statement's fingerprint when the caller
    already holds it (`connector._readonly.remembered_fingerprint` of that text), else it is
    computed here.
    """
    statement: dict[str, str] = {}
    if sql is not None:
        statement["sql"] = _clean(sql)
    if query is not None:
        statement["query"] = _clean(query)
    text = sql if sql is not None else statement_sql
    types = param_types or {}
    plist = []
    for name in sorted(params):
        ptype = types.get(name) or param_type(params[name])
        item: dict[str, Any] = {"name": _clean(name), "type": ptype}
        if log_param_values:
            item["value"] = _jsonable(params[name])
        plist.append(item)
    record: dict[str, Any] = {
        "query_id": _clean(query_id),
        "subject": subject,
        "issuer": issuer,
        "role": role,
        "statement": statement,
        "fingerprint": None if text is None else fingerprint or _fingerprint(text),
        "params": plist,
        "outcome": {
            "status": outcome.status,
            "rows": int(outcome.rows),
            "bytes": int(outcome.bytes),
            "duration_ms": int(outcome.duration_ms),
            "error_code": outcome.error_code,
            "sql_error_number": outcome.sql_error_number,
        },
    }
    if session is not None:
        record["session"] = {key: _clean(str(value)) for key, value in session.items()}
    return record


class AuditLog:
    """Appends hash-chained records to one file. Thread-safe; ``write`` is the async face."""

    def __init__(
        self,
        path: str | Path,
        *,
        fsync: FsyncPolicy = "always",
        fsync_interval_s: float = 1.0,
        continue_from: str | Path | None = None,
        rotate_bytes: int = 0,
    ) -> None:
        """Open ``path`` for appending, continuing its chain (or, if it is empty,
        ``continue_from``'s, else the newest rotated file's beside it).

        Args:
            rotate_bytes: rotate (:meth:`rotate_now`) once the file reaches this size; 0 = never.

        Raises:
            AuditError: the existing last line is incomplete or not a valid record.
        """
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync must be always, interval or never, not {fsync!r}")
        self.path = Path(path)
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self._lock = threading.Lock()
        self._last_sync = time.monotonic()
        self._dirty = False
        self.rotate_bytes = rotate_bytes
        #: the size at which the file rotates next (`rotate_bytes`, or more after a failure)
        self._rotate_at = rotate_bytes
        #: records waiting for the group commit leader (see `write`), and whether one leads
        self._queue: list[_Queued] = []
        self._leading = False
        self._thread: WorkerThread | None = None
        #: writer-thread writes made by `write` so far (each one write + at most one fsync)
        self.group_commits = 0
        #: called by :meth:`write` (in trio) with each record written; connector/checkpoints.py
        self.on_write: Callable[[Mapping[str, Any]], None] | None = None
        self.seq, self.head = _tail(self.path)
        if self.seq == 0:
            previous = Path(continue_from) if continue_from is not None else None
            previous = previous or newest_rotated(self.path)
            if previous is not None:
                self.seq, self.head = _tail(previous)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._size = os.fstat(self._fd).st_size

    def write_sync(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Chain and append one record (blocking). Returns the record as written."""
        [written] = self.write_many_sync([record])
        if isinstance(written, Exception):
            raise written
        return written

    def write_many_sync(
        self, records: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any] | Exception]:
        """Chain and append ``records`` in order (blocking): one ``write`` and at most one fsync
        for all of them (group commit), except that the file still rotates right after the
        record that reaches ``rotate_bytes``. Returns each record as written, or the exception
        that kept that record out of the chain: a value JSON cannot carry (that record alone),
        or a write that failed after the group's records up to a rotation were written (the
        records from there on, which are not in the chain; the ones before are).

        A rotation that fails leaves the log open on its file when it can (the rename failed,
        or the rotated name is taken): the records go on in that file, the failure is logged
        (``audit.rotate_failed``) and rotation is tried again once another ``rotate_bytes`` have
        been written. Records are never failed for a rotation alone.

        Raises:
            AuditError: the log is closed.
            OSError: the file could not be written before any of the records was: none of
                them is in the chain (the chain's head is unchanged).
        """
        with self._lock:
            if self._fd is None:
                raise AuditError(f"audit log {self.path} is closed")
            out: list[dict[str, Any] | Exception] = []
            lines: list[bytes] = []
            seq, head, size = self.seq, self.head, self._size
            now = _now()  # the group's records are written together
            written = 0  # out[:written] is final: on disk, or failed alone
            try:
                for record in records:
                    try:
                        full, line = _chained(record, seq + 1, head, now)
                    except (ValueError, TypeError) as exc:
                        out.append(exc)
                        continue
                    lines.append(line)
                    out.append(full)
                    seq, head, size = full["seq"], full["hash"], size + len(line)
                    if self.rotate_bytes and size >= self._rotate_at:
                        self._append_locked(lines, seq, head)
                        lines, written = [], len(out)
                        self._rotate_in_group_locked()
                        size = self._size
                if lines:
                    self._append_locked(lines, seq, head)
            except (OSError, AuditError) as exc:
                if not written:
                    raise
                # the records up to the rotation are in the chain; none of the rest is
                rest = [r if isinstance(r, Exception) else exc for r in out[written:]]
                return out[:written] + rest + [exc] * (len(records) - len(out))
            return out

    def _rotate_in_group_locked(self) -> None:
        """Rotate by size (`write_many_sync`). A failure that leaves the log open is logged
        and retried after another ``rotate_bytes``; one that closes it raises."""
        try:
            self._rotate_locked()
        except (OSError, AuditError) as exc:
            if self._fd is None:
                raise
            self._rotate_at = self._size + self.rotate_bytes
            log.error(
                "audit.rotate_failed: %s was not rotated (%s); the records go on in it, and "
                "rotation is tried again once it has grown by another %d bytes",
                self.path,
                exc,
                self.rotate_bytes,
                extra={"event": "audit.rotate_failed", "path": str(self.path)},
            )

    def _append_locked(self, lines: list[bytes], seq: int, head: str) -> None:
        """Write the chained ``lines`` (the last one's seq and hash given), then fsync by policy."""
        assert self._fd is not None
        data = b"".join(lines)
        done = 0
        try:
            while done < len(data):  # a write may take part of the bytes (a full disk, a quota)
                taken = os.write(self._fd, memoryview(data)[done:] if done else data)
                if not taken:  # never for a file on Linux; no endless loop if it ever is
                    raise OSError(errno.EIO, "the audit file took none of the bytes written")
                done += taken
        except OSError:
            if done:
                # a part of a line would break the chain for every record after it: cut the
                # file back to its last whole record (the chain's head stays where it was)
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)
        self.seq, self.head = seq, head
        self._dirty = True
        now = time.monotonic()
        if self.fsync == "always" or (
            self.fsync == "interval" and now - self._last_sync >= self.fsync_interval_s
        ):
            os.fsync(self._fd)
            self._last_sync, self._dirty = now, False

    async def write(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Chain and append one record from trio, with group commit.

        Strategy: the first caller while no write is in progress becomes the *leader*: it takes
        every record queued so far and writes them in ONE call of its writer thread (one write, one
        fsync: `write_many_sync`). Callers that arrive meanwhile queue their record and wait; when
        the leader is done it wakes them and, if more records queued up, hands the lead to the
        first of them. Records are chained in the order `write` was called; each caller returns
        only once its own record is on disk (per the fsync policy), as without group commit.
        Not cancellable, as if shielded: a record once queued is written, and the lead is never
        lost; a cancel takes effect at the caller's next checkpoint after it returns.

        Raises:
            AuditError: the log is closed.
            OSError: the file could not be written.
            ValueError, TypeError: this record cannot be serialized (the others are written).
        """
        entry = _Queued(record)
        self._queue.append(entry)
        if self._leading:
            # written by a leader, or handed the lead; woken only by `_lead`
            entry.task = _lowlevel().current_task()
            await _lowlevel().wait_task_rescheduled(_never_abort)
            entry.task = None  # running again: if it leads, `_lead` must not wake it
        if not entry.finished:
            await self._lead()
        if isinstance(entry.result, BaseException):
            raise entry.result
        written: dict[str, Any] = entry.result
        return written

    async def _lead(self) -> None:
        self._leading = True
        batch, self._queue = self._queue, []
        try:
            results: list[dict[str, Any] | Exception] = await self._writer().call(
                partial(self.write_many_sync, [e.record for e in batch]), checkpoint=False
            )
        except Exception as exc:  # the whole batch failed (closed, disk full): all of them
            results = [exc] * len(batch)
        reschedule = _lowlevel().reschedule
        for queued, result in zip(batch, results, strict=True):
            queued.result, queued.finished = result, True
            if queued.task is not None:
                reschedule(queued.task)
        if self._queue:
            # not finished: it leads the next batch (every queued record's caller waits, as a
            # leader is at work from the first record on)
            reschedule(self._queue[0].task)
        else:
            self._leading = False
        self.group_commits += 1
        if self.on_write is not None:
            for result in results:
                if not isinstance(result, Exception):
                    self.on_write(result)

    def _writer(self) -> WorkerThread:
        """This log's writer thread, started on first use and stopped once the log is garbage
        (no leader can be waiting for it then; `close` may run while one is). The leader waits
        for its group write on the thread's own socket pair, which costs less CPU than a
        `trio.to_thread.run_sync` round trip."""
        from connector._thread import WorkerThread

        if self._thread is None:
            self._thread = WorkerThread(f"edgetds audit {self.path.name}")
            weakref.finalize(self, self._thread.stop)
        return self._thread

    def position(self) -> tuple[int, str, str]:
        """(seq, head hash, file name) of the last record written: what a checkpoint signs."""
        with self._lock:
            return self.seq, self.head, self.path.name

    def rotate(self, new_path: str | Path) -> None:
        """Close this file and continue the chain in ``new_path`` (which must be empty)."""
        new_path = Path(new_path)
        if new_path.exists() and new_path.stat().st_size:
            raise AuditError(f"cannot rotate into {new_path}: it is not empty")
        with self._lock:
            self._close_locked()
            self.path = new_path
            self._fd = os.open(new_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._size = os.fstat(self._fd).st_size

    def rotate_now(self) -> Path | None:
        """Rename the file to ``<name>.<last seq>`` and continue the chain in a new ``<name>``.

        Returns the rotated file's path, or None when the file has no record yet (nothing to do).
        """
        with self._lock:
            if self._fd is None:
                raise AuditError(f"audit log {self.path} is closed")
            return self._rotate_locked()

    def _rotate_locked(self) -> Path | None:
        if self._size == 0:
            return None
        rotated = self.path.with_name(f"{self.path.name}.{self.seq:012d}")
        if rotated.exists():
            raise AuditError(f"cannot rotate {self.path} to {rotated}: that file exists")
        self._close_locked()
        try:
            os.rename(self.path, rotated)
        finally:
            # renamed or not, the chain goes on in a file of this name (a new one, or the
            # same one when the rename failed): the log stays open unless this open fails
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._size = os.fstat(self._fd).st_size
        self._rotate_at = self.rotate_bytes
        return rotated

    async def rotate_async(self) -> Path | None:
        """:meth:`rotate_now` from trio (in a worker thread)."""
        import trio

        return await trio.to_thread.run_sync(self.rotate_now)

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._fd is None:
            return
        if self._dirty and self.fsync != "never":
            os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None

    async def aclose(self) -> None:
        import trio

        await trio.to_thread.run_sync(self.close)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Queued:
    """A record waiting in `AuditLog.write`'s group commit queue."""

    __slots__ = ("finished", "record", "result", "task")

    def __init__(self, record: Mapping[str, Any]) -> None:
        self.record = record
        #: the waiting caller's trio task (None: its caller leads and waits for the writer)
        self.task: Any = None
        self.finished = False
        self.result: Any = None


def _lowlevel() -> Any:
    """``trio.lowlevel`` (imported when first used: `edgetds audit verify` needs no trio)."""
    import trio.lowlevel

    return trio.lowlevel


def _never_abort(_raise_cancel: object) -> Any:
    """An abort function that refuses: a queued record's caller waits for it whatever happens."""
    return _lowlevel().Abort.FAILED


def _chained(
    record: Mapping[str, Any], seq: int, prev: str, now: str
) -> tuple[dict[str, Any], bytes]:
    """``record`` chained as record ``seq`` after ``prev``: (the record with its hash, its line).

    The line is ``canonical_json(full) + b"\\n"`` and the hash covers ``canonical_json`` of the
    same record without "hash" (`record_hash`). Both are cut from one encoding of the members
    that sort before "hash" and one of those after it (canonical JSON sorts the keys), so the
    record is serialized once, not once for its hash and again for its line.
    """
    full = dict(record)
    full.update(v=1, seq=seq, prev=prev, time=now)
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for key, value in full.items():
        if key < "hash":
            before[key] = value
        elif key != "hash":
            after[key] = value
    left = canonical_json(before)
    opening = left[:-1] + b"," if len(left) > 2 else b"{"
    rest = canonical_json(after)[1:]  # never empty: v, seq, prev and time sort after "hash"
    digest = hashlib.sha256(b"".join((_DOMAIN, opening, rest))).hexdigest()
    full["hash"] = digest
    return full, b"".join((opening, b'"hash":"', digest.encode("ascii"), b'",', rest, b"\n"))


def rotated_files(path: str | Path) -> list[Path]:
    """The rotated files of ``path`` (``<name>.<12 digits>``), oldest first."""
    path = Path(path)
    pattern = re.compile(re.escape(path.name) + r"\.[0-9]{12}")
    try:
        names = [p.name for p in path.parent.iterdir() if pattern.fullmatch(p.name)]
    except FileNotFoundError:
        return []
    return [path.with_name(name) for name in sorted(names)]


def newest_rotated(path: str | Path) -> Path | None:
    """The most recent rotated file of ``path``, or None."""
    files = rotated_files(path)
    return files[-1] if files else None


def _tail(path: Path) -> tuple[int, str]:
    """(seq, hash) of the last record of ``path``; (0, GENESIS) if it is missing or empty."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            if size == 0:
                return 0, GENESIS
            fh.seek(max(0, size - _TAIL_BYTES))
            data = fh.read()
    except FileNotFoundError:
        return 0, GENESIS
    fix = f"run `edgetds audit verify {path}`, then move the file aside to start a new one"
    if not data.endswith(b"\n"):
        raise AuditError(f"{path}: the last line is incomplete (truncated write?); {fix}")
    last = data[:-1].rsplit(b"\n", 1)[-1]
    try:
        record = loads_object(last)
        seq, stored = record["seq"], record["hash"]
    except (ValueError, KeyError):
        raise AuditError(f"{path}: the last line is not an audit record; {fix}") from None
    if not isinstance(seq, int) or stored != record_hash(record):
        raise AuditError(f"{path}: the last record does not match its hash; {fix}")
    return seq, str(stored)


@dataclass(frozen=True)
class VerifyResult:
    """``ok``, how many records were checked, the head hash, or where the chain first breaks."""

    ok: bool
    records: int
    head: str
    file: str | None = None
    line: int | None = None
    problem: str | None = None
    #: the seq of the last record checked (None: none)
    last_seq: int | None = None
    #: seq -> hash of the records asked for by ``at_seqs`` (see :func:`verify_files`) and checked
    hashes: Mapping[int, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.ok:
            return f"ok: {self.records} records, chain intact; head hash {self.head}"
        return f"{self.file}:{self.line}: {self.problem}"


def verify_files(
    paths: Sequence[str | Path], *, prev: str = GENESIS, at_seqs: Collection[int] = ()
) -> VerifyResult:
    """Check one chain spread over ``paths`` (oldest first). Stops at the first broken line.

    ``at_seqs``: also report the hashes of the records with these seqs (``hashes``), which
    checkpoints are compared with.
    """
    head, seq, count = prev, None, 0
    found: dict[int, str] = {}
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            return VerifyResult(False, count, head, str(path), 0, f"cannot read: {exc.strerror}")
        lines = data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()  # the normal case: the file ends with a newline
        for lineno, raw in enumerate(lines, start=1):
            truncated = lineno == len(lines) and not data.endswith(b"\n")
            problem, record = _check_line(raw, head, truncated=truncated)
            if problem is None and record is not None and record.get("prev") != head:
                expected = 1 if seq is None else seq + 1
                problem = _chain_problem(record, expected, seq, lines, lineno, prev)
            if problem is not None or record is None:
                return VerifyResult(False, count, head, str(path), lineno, problem, seq, found)
            head, seq, count = record["hash"], record["seq"], count + 1
            if seq in at_seqs:
                found[seq] = head
    return VerifyResult(True, count, head, last_seq=seq, hashes=found)


def _check_line(
    raw: bytes, head: str, *, truncated: bool
) -> tuple[str | None, dict[str, Any] | None]:
    """(problem, record) for one line on its own (chain linkage is checked by the caller)."""
    try:
        record = loads_object(raw)
    except ValueError:
        if truncated:
            return "incomplete last line (truncated)", None
        return "not a valid JSON record (garbage inserted or line damaged)", None
    stored, rseq = record.get("hash"), record.get("seq")
    if not isinstance(rseq, int) or not isinstance(stored, str):
        return "not an audit record (no seq/hash)", None
    if stored != record_hash(record):
        return f"record seq {rseq} was edited: its hash does not match its content", None
    if truncated and record.get("prev") == head:
        return "last line has no newline (truncated after the record?)", None
    return None, record


def _chain_problem(
    record: Mapping[str, Any],
    expected: int,
    last_seq: int | None,
    lines: list[bytes],
    lineno: int,
    prev_arg: str,
) -> str:
    rseq = record["seq"]
    if last_seq is None and prev_arg == GENESIS:
        return (
            f"the chain starts at seq {rseq}, not from the genesis value: earlier records or "
            "files are missing (pass older files first, or --prev HASH)"
        )
    if rseq > expected:
        for later, raw in enumerate(lines[lineno:], start=lineno + 1):
            try:
                if loads_object(raw).get("seq") == expected:
                    return f"lines reordered: seq {rseq} comes before seq {expected} (line {later})"
            except ValueError:
                continue
        return f"record(s) removed: seq jumps from {last_seq} to {rseq}"
    if rseq < expected:
        return f"lines reordered or duplicated: seq {rseq} after seq {last_seq}"
    return (
        f"prev does not match the hash of line {lineno - 1}: that line was replaced or "
        "edited and re-hashed"
    )


def loads_object(data: bytes) -> dict[str, Any]:
    """One JSON object; duplicate keys and NaN/Infinity refused (they could hide an edit)."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            raise ValueError("duplicate key")
        return obj

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not allowed")

    try:
        value = json.loads(data, object_pairs_hook=unique, parse_constant=no_constant)
    except (UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clean(text: str) -> str:
    """Drop lone surrogates (not encodable as UTF-8) so one odd request cannot stop the log."""
    if text.isascii():  # no surrogate: the text as it is
        return text
    return text.encode("utf-8", "replace").decode("utf-8")


def _jsonable(value: Any) -> Any:
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, float):
        return repr(value)  # no floats in chained records (canonical form)
    if isinstance(value, Mapping):
        return {_clean(str(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value
