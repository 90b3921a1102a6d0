"""Audit log: records, redaction, hash chain, continuation, rotation, tamper detection, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

import protocol
from connector.audit import (
    GENESIS,
    AuditError,
    AuditLog,
    AuditOutcome,
    query_record,
    record_hash,
    verify_files,
)
from edgetds.cli import main

OK = AuditOutcome(status="ok", rows=3, bytes=120, duration_ms=7)


def rec(i: int, **kw: object) -> dict[str, object]:
    base = dict(
        query_id=f"q{i}",
        subject="alice",
        issuer="https://idp",
        role="analyst",
        sql=f"SELECT * FROM t WHERE id = @id AND note = 'x{i}'",
        query=None,
        params={"id": i, "secret": "hunter2"},
        outcome=OK,
    )
    base.update(kw)
    return query_record(**base)  # type: ignore[arg-type]


def write_log(path: Path, n: int) -> list[bytes]:
    with AuditLog(path, fsync="never") as log:
        for i in range(1, n + 1):
            log.write_sync(rec(i))
    return path.read_bytes().splitlines(keepends=True)


def test_record_fields_and_redaction(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        written = log.write_sync(rec(1))
        named = log.write_sync(
            rec(
                2,
                sql=None,
                query="orders_by_customer",
                statement_sql="SELECT 1 WHERE c = @cid",
                params={"cid": {"type": "int", "value": "5"}, "when": None, "ok": True},
                outcome=AuditOutcome(status="error", duration_ms=3, sql_error_number=208,
                                error_code="sql.error"),
                log_param_values=True,
            )
        )  # fmt: skip
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first == written
    assert first["seq"] == 1
    assert first["prev"] == GENESIS
    assert first["hash"] == record_hash(first)
    assert first["params"] == [
        {"name": "id", "type": "bigint"},
        {"name": "secret", "type": protocol.param_type("hunter2")},  # the protocol's type
    ]
    assert first["params"][1]["type"].startswith("nvarchar")
    assert "hunter2" not in lines[0]
    assert first["statement"] == {"sql": "SELECT * FROM t WHERE id = @id AND note = 'x1'"}
    assert len(first["fingerprint"]) == 64
    assert first["outcome"] == {
        "status": "ok", "rows": 3, "bytes": 120, "duration_ms": 7,
        "error_code": None, "sql_error_number": None,
    }  # fmt: skip
    assert first["time"].endswith("Z")
    second = json.loads(lines[1])
    assert second["prev"] == first["hash"]
    assert second["statement"] == {"query": "orders_by_customer"}
    assert second["params"][0] == {
        "name": "cid",
        "type": "int",
        "value": {"type": "int", "value": "5"},
    }
    assert second["outcome"]["sql_error_number"] == 208
    assert named["hash"] == second["hash"]
    # Same statement shape, different literals: same fingerprint.
    assert rec(5)["fingerprint"] == rec(6)["fingerprint"]
    assert (
        lines[0].encode()
        == json.dumps(first, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )


def test_intact_chain_verifies(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write_log(path, 10)
    result = verify_files([path])
    assert result.ok
    assert result.records == 10
    assert result.head == json.loads(path.read_text().splitlines()[-1])["hash"]


def tamper(tmp_path: Path, lines: list[bytes]) -> Path:
    out = tmp_path / "tampered.jsonl"
    out.write_bytes(b"".join(lines))
    return out


def test_edited_line_detected(tmp_path: Path) -> None:
    lines = write_log(tmp_path / "a.jsonl", 6)
    lines[3] = lines[3].replace(b'"subject":"alice"', b'"subject":"bob"')
    result = verify_files([tamper(tmp_path, lines)])
    assert (result.ok, result.line) == (False, 4)
    assert "edited" in str(result.problem)
    assert result.records == 3


def test_edited_and_rehashed_line_detected_at_next(tmp_path: Path) -> None:
    lines = write_log(tmp_path / "a.jsonl", 6)
    record = json.loads(lines[2])
    record["role"] = "admin"
    record["hash"] = record_hash(record)
    lines[2] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    result = verify_files([tamper(tmp_path, lines)])
    assert (result.ok, result.line) == (False, 4)
    assert "line 3" in str(result.problem)


def test_removed_line_detected(tmp_path: Path) -> None:
    lines = write_log(tmp_path / "a.jsonl", 6)
    del lines[2]
    result = verify_files([tamper(tmp_path, lines)])
    assert (result.ok, result.line) == (False, 3)
    assert "removed: seq jumps from 2 to 4" in str(result.problem)


def test_removed_first_line_detected(tmp_path: Path) -> None:
    lines = write_log(tmp_path / "a.jsonl", 3)
    result = verify_files([tamper(tmp_path, lines[1:])])
    assert (result.ok, result.line) == (False, 1)
    assert "not from the genesis value" in str(result.problem)


def test_swapped_lines_detected(tmp_path: Path) -> None:
    lines = write_log(tmp_path / "a.jsonl", 6)
    lines[1], lines[2] = lines[2], lines[1]
    result = verify_files([tamper(tmp_path, lines)])
    assert (result.ok, result.line) == (False, 2)
    assert "reordered" in str(result.problem)


def test_appended_garbage_detected(tmp_path: Path) -> None:
    lines = write_log(tmp_path / "a.jsonl", 4)
    for garbage in (b"garbage\n", b"{}\n", b'{"seq": 5, "hash": "x"}\n', b"\n"):
        result = verify_files([tamper(tmp_path, [*lines, garbage])])
        assert (result.ok, result.line) == (False, 5), garbage


def test_truncated_last_line_detected(tmp_path: Path) -> None:
    lines = write_log(tmp_path / "a.jsonl", 4)
    result = verify_files([tamper(tmp_path, [*lines[:3], lines[3][:40]])])
    assert (result.ok, result.line) == (False, 4)
    assert "truncated" in str(result.problem)
    # Only the newline lost: still reported.
    result = verify_files([tamper(tmp_path, [*lines[:3], lines[3][:-1]])])
    assert (result.ok, result.line) == (False, 4)


def test_duplicate_key_refused(tmp_path: Path) -> None:
    lines = write_log(tmp_path / "a.jsonl", 2)
    lines[1] = lines[1][:-2] + b',"role":"admin"}\n'
    result = verify_files([tamper(tmp_path, lines)])
    assert (result.ok, result.line) == (False, 2)


def test_reopen_continues_chain(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write_log(path, 3)
    with AuditLog(path) as log:
        assert log.seq == 3
        assert log.write_sync(rec(4))["seq"] == 4
    assert verify_files([path]).records == 4


def test_reopen_refuses_broken_tail(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    lines = write_log(path, 3)
    path.write_bytes(b"".join(lines)[:-5])
    with pytest.raises(AuditError, match="incomplete"):
        AuditLog(path)
    path.write_bytes(b"".join(lines[:2]) + lines[2].replace(b"alice", b"mallory"))
    with pytest.raises(AuditError, match="does not match its hash"):
        AuditLog(path)


def test_rotation_continues_chain_across_files(tmp_path: Path) -> None:
    old, new = tmp_path / "a.jsonl.1", tmp_path / "a.jsonl"
    with AuditLog(old, fsync="interval", fsync_interval_s=0.0) as log:
        log.write_sync(rec(1))
        log.write_sync(rec(2))
        log.rotate(new)
        log.write_sync(rec(3))
    assert verify_files([old, new]).records == 3
    alone = verify_files([new])
    assert (alone.ok, alone.line) == (False, 1)
    head_of_old = verify_files([old]).head
    assert verify_files([new], prev=head_of_old).ok
    # A new process continuing after an external rotation: continue_from the archived file.
    third = tmp_path / "a.jsonl.next"
    with AuditLog(third, continue_from=new) as log:
        assert log.write_sync(rec(4))["seq"] == 4
    assert verify_files([old, new, third]).records == 4


async def test_concurrent_async_writes_keep_chain(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path, fsync="always")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(log.write, rec(i))
        await log.aclose()
    result = verify_files([path])
    assert result.ok
    assert result.records == 50


def test_lone_surrogate_does_not_stop_the_log(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "a.jsonl") as log:
        log.write_sync(rec(1, sql="SELECT '\ud800'", params={"p\udfff": "x"}))
    assert verify_files([tmp_path / "a.jsonl"]).ok


def test_cli_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.jsonl"
    lines = write_log(path, 5)
    assert main(["audit", "verify", str(path)]) == 0
    assert "ok: 5 records" in capsys.readouterr().out
    del lines[1]
    bad = tamper(tmp_path, lines)
    assert main(["audit", "verify", str(bad)]) == 1
    assert f"{bad}:2: record(s) removed" in capsys.readouterr().err
    assert main(["audit", "verify", str(tmp_path / "missing")]) == 1
    assert "cannot read" in capsys.readouterr().err


async def test_group_commit_keeps_call_order_and_batches_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent writers: records are chained in the order `write` was called, written in
    fewer worker-thread writes (and fsyncs) than records, and every caller returns its own
    record as written; the checkpoint hook sees them in chain order."""
    import connector.audit as audit_module

    fsyncs: list[int] = []
    real_fsync = audit_module.os.fsync
    monkeypatch.setattr(audit_module.os, "fsync", lambda fd: fsyncs.append(fd) or real_fsync(fd))
    path = tmp_path / "a.jsonl"
    log = AuditLog(path, fsync="always")
    hooked: list[int] = []
    log.on_write = lambda record: hooked.append(record["seq"])
    called: list[str] = []
    returned: dict[str, int] = {}

    async def one(i: int) -> None:
        called.append(f"q{i}")  # no checkpoint between this and the write: the call order
        returned[f"q{i}"] = (await log.write(rec(i)))["seq"]

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(one, i)
        await log.aclose()
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert [r["query_id"] for r in records] == called
    assert returned == {r["query_id"]: r["seq"] for r in records}
    assert hooked == list(range(1, 41))
    assert verify_files([path]).ok
    assert 2 <= log.group_commits < 40
    assert len(fsyncs) == log.group_commits


async def test_group_commit_a_bad_record_fails_alone(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path, fsync="never")
    outcomes: dict[int, str] = {}

    async def one(i: int) -> None:
        record = rec(i)
        if i == 3:
            record["subject"] = object()  # JSON cannot carry it
        try:
            await log.write(record)
        except TypeError:
            outcomes[i] = "refused"
        else:
            outcomes[i] = "written"

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(one, i)
        await log.aclose()
    assert outcomes == {i: "refused" if i == 3 else "written" for i in range(8)}
    result = verify_files([path])
    assert result.ok
    assert result.records == 7


async def test_group_writes_run_on_the_logs_own_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`write` hands its group writes to one writer thread of the log's own (no trio worker
    thread round trip); records written that way verify, and the thread ends with the log."""
    import gc
    import threading

    import connector.audit as audit_module

    def no_trio_thread(*args: object, **kwargs: object) -> object:
        raise AssertionError("trio.to_thread.run_sync called")

    monkeypatch.setattr(trio.to_thread, "run_sync", no_trio_thread)
    writers: list[threading.Thread] = []
    real_write = audit_module.os.write
    monkeypatch.setattr(
        audit_module.os,
        "write",
        lambda fd, data: writers.append(threading.current_thread()) or real_write(fd, data),
    )
    path = tmp_path / "a.jsonl"
    log = AuditLog(path, fsync="always")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(log.write, rec(i))
        await log.write(rec(10))
    log.close()
    assert verify_files([path]).records == 11
    [writer] = set(writers)
    assert writer.name == "edgetds audit a.jsonl"
    assert writer is not threading.current_thread()
    with pytest.raises(AuditError, match="closed"):  # loud after close, as before
        await log.write(rec(11))
    del log
    gc.collect()
    writer.join(timeout=20)
    assert not writer.is_alive()


def test_each_line_is_the_canonical_json_of_its_record(tmp_path: Path) -> None:
    """Whatever members a record has (none before "hash", a stale hash or seq of its own,
    non-ASCII text, logged values, a session), its line is exactly canonical_json of the
    record as written plus a newline, and its hash covers the same without "hash"."""
    path = tmp_path / "a.jsonl"
    records: list[dict[str, object]] = [
        rec(1),
        rec(
            2, sql="SELECT N'Zürich — 東京' AS \"città\"", params={"é": "ß"}, log_param_values=True
        ),
        rec(3, session={"id": "s-1", "op": "begin", "role": "analyst"}),
        {"zeta": [1, {"b": None, "a": "x"}], "seq": 99, "hash": "stale", "v": 7},
        {"aaa": 1},
        {},
    ]
    with AuditLog(path) as log:
        written = [log.write_sync(record) for record in records]
        grouped = log.write_many_sync(records)
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 2 * len(records)
    for line, returned in zip(lines, written + grouped, strict=True):
        parsed = json.loads(line)
        assert line == protocol.canonical_json(parsed) + b"\n"
        assert parsed == returned
        assert parsed["hash"] == record_hash(parsed)
    for i, record in enumerate(records):
        parsed = json.loads(lines[i])
        assert {
            k: v for k, v in parsed.items() if k not in ("v", "seq", "prev", "time", "hash")
        } == {k: v for k, v in record.items() if k not in ("v", "seq", "prev", "time", "hash")}
        assert (parsed["v"], parsed["seq"]) == (1, i + 1)
    assert verify_files([path]).records == 2 * len(records)


async def test_a_cancelled_caller_still_writes_its_record(tmp_path: Path) -> None:
    """`write` cannot be cancelled: callers whose scope is cancelled before or while they wait
    (the leader and the ones queued behind it) each return their record, written; the cancel
    takes effect at their next checkpoint."""
    path = tmp_path / "a.jsonl"
    log = AuditLog(path, fsync="always")
    returned: list[int] = []
    reached: list[int] = []
    called: list[str] = []

    async def one(i: int, scope: trio.CancelScope) -> None:
        with scope:
            called.append(f"q{i}")  # no checkpoint between this and the write: the call order
            returned.append((await log.write(rec(i)))["seq"])
            await trio.lowlevel.checkpoint()
            reached.append(i)  # not reached: the cancel is raised at the checkpoint above

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            # the leader's write (in the log's thread) waits for the log's lock until the other
            # five are queued behind it and cancelled: however fast the disk, none is written yet
            log._lock.acquire()
            try:
                early = trio.CancelScope()
                early.cancel()  # cancelled before it calls write: it leads all the same
                nursery.start_soon(one, 0, early)
                await trio.testing.wait_all_tasks_blocked()  # it leads: its write is under way
                waiting = [trio.CancelScope() for _ in range(1, 6)]
                for i, scope in enumerate(waiting, start=1):
                    nursery.start_soon(one, i, scope)
                await trio.testing.wait_all_tasks_blocked()
                assert log.seq == 0  # the first write waits; the five queued behind it
                assert len(called) == 6
                for scope in waiting:
                    scope.cancel()
            finally:
                log._lock.release()
        await log.aclose()
    assert sorted(returned) == list(range(1, 7))
    assert reached == []
    assert [json.loads(line)["query_id"] for line in path.read_bytes().splitlines()] == called
    assert sorted(called) == [f"q{i}" for i in range(6)]
    assert verify_files([path]).records == 6


#: run in a process of its own: the file size limit would otherwise hold for the test process
_SHORT_WRITE = """
import os, resource, signal, sys
from connector.audit import AuditLog, verify_files
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write beyond the limit fails with EFBIG
path = sys.argv[1]
record = {"query_id": "q", "statement": {"sql": "x" * 200}}
with AuditLog(path) as log:
    log.write_sync(record)
    size = os.path.getsize(path)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, resource.RLIM_INFINITY))
    try:
        log.write_sync(record)  # about 500 bytes: the first 100 fit
    except OSError as exc:
        print("failed", exc.errno)
    print("seq", log.seq, "size", size, os.path.getsize(path))
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    log.write_sync(record)
print("verified", verify_files([path]).records)
"""


def _run_alone(script: str, path: Path) -> list[str]:
    """Run ``script`` (a file size limit's test) in a Python process of its own, with ``path``
    as its argument; its output lines."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")


def test_a_write_that_takes_part_of_a_line_leaves_no_part_of_it(tmp_path: Path) -> None:
    """A write of which the file takes only a part (the size limit here; a full disk or a quota
    in production) fails with no part of a line left in the file and the chain's head where it
    was: the record after it continues the chain, which verifies."""
    path = tmp_path / "a.jsonl"
    out = _run_alone(_SHORT_WRITE, path)
    assert out[0].startswith("failed 27"), out  # EFBIG
    _, seq, _, size, after = out[1].split()
    assert (seq, after) == ("1", size)
    assert out[2] == "verified 2"
    lines = path.read_bytes().splitlines(keepends=True)
    assert [json.loads(line)["seq"] for line in lines] == [1, 2]


_FAILS_AFTER_ROTATION = """
import os, resource, signal, sys
from connector.audit import AuditLog, rotated_files, verify_files
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write beyond the limit fails with EFBIG
path = sys.argv[1]
with AuditLog(path, rotate_bytes=400) as log:
    resource.setrlimit(resource.RLIMIT_FSIZE, (600, resource.RLIM_INFINITY))
    # about 500 bytes (fits, reaches rotate_bytes: the file rotates), then about 700 (does not)
    small = {"query_id": "a", "statement": {"sql": "x" * 200}}
    big = {"query_id": "b", "statement": {"sql": "x" * 400}}
    out = log.write_many_sync([small, big])
    print("results", *(type(r).__name__ for r in out), getattr(out[1], "errno", None))
    print("seq", log.seq)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    log.write_sync({"query_id": "c"})
files = [*rotated_files(path), path]
print("files", *(os.path.basename(f) for f in files))
print("verified", verify_files(files).records)
"""


def test_a_write_that_fails_after_a_rotation_fails_only_what_it_did_not_write(
    tmp_path: Path,
) -> None:
    """A group whose first record rotates the file and whose next record cannot be written
    (a file size limit here; a full disk in production): the first is reported written (it is
    in the rotated file and the chain), the second failed, and the chain goes on from the
    first."""
    path = tmp_path / "audit.jsonl"
    assert _run_alone(_FAILS_AFTER_ROTATION, path) == [
        "results dict OSError 27",  # EFBIG
        "seq 1",
        "files audit.jsonl.000000000001 audit.jsonl",
        "verified 2",
        "",
    ]
    assert [json.loads(line)["query_id"] for line in path.read_text().splitlines()] == ["c"]
