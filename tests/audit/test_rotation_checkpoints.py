"""Audit rotation by size, the checkpoint schedule (virtual time), the relay's checkpoint store,
and `edgetds audit verify --checkpoint FILE` against saved checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connector.audit import AuditLog, AuditOutcome, query_record, rotated_files, verify_files
from connector.checkpoints import AuditCheckpoints
from connector.config import ConfigError, load_config
from edgetds.cli import main
from identity.keys import encode_public_key
from protocol import GENESIS, sign_checkpoint
from relay.checkpoints import CheckpointStore

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()


def rec(i: int) -> dict[str, Any]:
    return query_record(
        query_id=f"q{i}", subject="alice", issuer="https://idp", role="analyst",
        sql=f"SELECT {i}", query=None, params={}, outcome=AuditOutcome(status="ok"),
    )  # fmt: skip


def signed(seq: int, head: str, *, key: Ed25519PrivateKey = KEY, **kw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"connector_id": "conn-1", "tunnel": "demo", "file": "audit.jsonl"}
    fields.update(kw)
    return sign_checkpoint(key, seq=seq, head=head, now=1_800_000_000, **fields)


def test_rotation_by_size_continues_the_chain_in_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, rotate_bytes=1000) as log:
        for i in range(12):
            log.write_sync(rec(i))
    rotated = rotated_files(path)
    assert len(rotated) >= 2
    for older in rotated:  # each rotated file reached the limit; the names sort in chain order
        assert older.stat().st_size >= 1000
        last = json.loads(older.read_text().splitlines()[-1])
        assert older.name == f"audit.jsonl.{last['seq']:012d}"
    result = verify_files([*rotated, path])
    assert result.ok, result
    assert (result.records, result.last_seq) == (12, 12)
    # the newest file alone starts mid-chain: verify needs the older files (or --prev)
    assert not verify_files([path]).ok or path.stat().st_size == 0


def test_a_rotation_that_fails_fails_no_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The rotated names are taken: every record of a group is written and chained in the file
    it had, the failure is logged once per ``rotate_bytes`` grown (not once per record), and
    the file rotates once a name is free."""
    path = tmp_path / "audit.jsonl"
    taken = [tmp_path / f"audit.jsonl.{seq:012d}" for seq in range(1, 31)]
    with AuditLog(path, rotate_bytes=1000) as log:
        for name in taken:  # after the open, which would continue from the newest of them
            name.write_text("not ours\n")
        written = log.write_many_sync([rec(i) for i in range(4)])
        assert all(isinstance(r, dict) for r in written), written
        for i in range(4, 12):
            log.write_sync(rec(i))
        size = path.stat().st_size
        failed = [r for r in caplog.records if r.getMessage().startswith("audit.rotate_failed")]
        assert 2 <= len(failed) <= size // 1000, (len(failed), size)
        assert "that file exists" in failed[0].getMessage()
        for name in taken:
            name.unlink()
        log.write_sync(rec(12))  # past the next threshold
        assert log.position()[0] == 13
    rotated = rotated_files(path)
    assert [r.name for r in rotated] == ["audit.jsonl.000000000013"]
    assert path.stat().st_size == 0
    result = verify_files(rotated)
    assert result.ok, result
    assert (result.records, result.last_seq) == (13, 13)


def test_a_rename_that_fails_leaves_the_log_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotation's rename can fail (a read-only or full file system): the log goes on in the
    same file (it used to be left closed, and every later record failed)."""
    import errno
    import os

    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.write_sync(rec(1))

        def no_rename(src: object, dst: object) -> None:
            raise OSError(errno.EROFS, "read-only file system")

        monkeypatch.setattr(os, "rename", no_rename)
        with pytest.raises(OSError, match="read-only"):
            log.rotate_now()
        monkeypatch.undo()
        log.write_sync(rec(2))
    assert rotated_files(path) == []
    result = verify_files([path])
    assert result.ok, result
    assert result.records == 2


def test_a_restart_on_an_empty_file_continues_from_the_newest_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.write_sync(rec(1))
        log.write_sync(rec(2))
        rotated = log.rotate_now()
        assert log.rotate_now() is None  # nothing written since: nothing to rotate
    assert rotated == tmp_path / "audit.jsonl.000000000002"
    assert path.stat().st_size == 0
    with AuditLog(path) as log:
        assert log.position() == (2, verify_files([rotated]).head, "audit.jsonl")
        log.write_sync(rec(3))
    assert verify_files([rotated, path]).ok
    assert json.loads(path.read_text())["seq"] == 3


def test_audit_config_keys(tmp_path: Path) -> None:
    from tests.connector.test_keys_config import _valid  # the smallest valid config

    path = tmp_path / "connector.toml"
    base = _valid(tmp_path) + '\n[audit]\nfile = "a.jsonl"\n'
    path.write_text(base)
    defaults = load_config(path)
    assert (defaults.audit_rotate_bytes, defaults.audit_checkpoint_every_records) == (0, 100)
    assert defaults.audit_checkpoint_interval_s == 60.0
    path.write_text(base + "rotate_bytes = 4096\ncheckpoint_every_records = 5\n"
                    "checkpoint_interval_s = 30\n")  # fmt: skip
    config = load_config(path)
    assert (config.audit_rotate_bytes, config.audit_checkpoint_every_records) == (4096, 5)
    assert config.audit_checkpoint_interval_s == 30.0
    path.write_text(base + "checkpoint_every_records = 0\nrotate_bytes = -1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert {p.location for p in info.value.problems} == {
        "audit.checkpoint_every_records",
        "audit.rotate_bytes",
    }


async def test_checkpoints_every_n_records_and_every_interval(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    # virtual time moves only when the test jumps it (the audit file I/O runs in a thread)
    sent: list[dict[str, Any]] = []

    async def sink(fields: dict[str, Any]) -> None:
        sent.append(fields)

    async def after(seconds: float) -> list[int]:
        mock_clock.jump(seconds)
        await trio.testing.wait_all_tasks_blocked()
        return [c["seq"] for c in sent]

    with AuditLog(tmp_path / "audit.jsonl") as log:
        checkpoints = AuditCheckpoints(
            log, key=lambda: KEY, connector_id="conn-1", tunnel="demo", every_records=3,
            interval_s=60, clock=lambda: 1_800_000_000 + trio.current_time(),
        )  # fmt: skip
        async with trio.open_nursery() as nursery:
            nursery.start_soon(checkpoints.run, sink)
            assert await after(0) == []
            assert await after(59) == []
            assert await after(1) == [0]  # the interval: an empty chain is checkpointed too
            assert sent[0]["head"] == GENESIS
            for i in range(3):  # three records: a checkpoint at once, long before the interval
                await log.write(rec(i))
            assert await after(0) == [0, 3]
            await log.write(rec(4))  # one record: only the interval sends it
            assert await after(59.5) == [0, 3]
            assert await after(0.5) == [0, 3, 4]
            assert sent[-1]["time"] == 1_800_000_000 + int(trio.current_time())
            assert await after(60) == [0, 3, 4, 4]  # at least every interval, also when idle
            nursery.cancel_scope.cancel()
    assert sent[-1]["head"] == verify_files([tmp_path / "audit.jsonl"]).head


def test_the_store_keeps_the_highest_checkpoint_and_the_first_conflict(tmp_path: Path) -> None:
    keys = [KEY.public_key()]
    store = CheckpointStore(tmp_path / "checkpoints.json")
    offer = store.offer
    assert offer(signed(5, "aa" * 32), keys, tunnel="demo", connector_id="conn-1")[0] == "stored"
    assert offer(signed(5, "aa" * 32), keys, tunnel="demo", connector_id="conn-1")[0] == "stored"
    invalid = [
        (signed(9, "bb" * 32, key=OTHER), "conn-1"),  # not the connector's key
        (signed(9, "bb" * 32, connector_id="conn-2"), "conn-1"),  # another connector's
        ({**signed(5, "aa" * 32), "seq": 9}, "conn-1"),  # moved forward after signing
    ]
    for fields, cid in invalid:
        assert offer(fields, keys, tunnel="demo", connector_id=cid)[0] == "invalid"
    outcome, why = offer(signed(4, "cc" * 32), keys, tunnel="demo", connector_id="conn-1")
    assert outcome == "regressed"
    assert "seq 4" in why
    assert offer(signed(5, "dd" * 32), keys, tunnel="demo", connector_id="conn-1")[0] == "regressed"
    assert offer(signed(6, "ee" * 32), keys, tunnel="demo", connector_id="conn-1")[0] == "stored"
    held = store.get("demo", "conn-1", "audit.jsonl")
    assert held is not None
    assert (held["checkpoint"]["seq"], held["conflict"]["head"]) == (6, "aa" * 32)
    # a restarted relay reads them back
    again = CheckpointStore(tmp_path / "checkpoints.json").get("demo", "conn-1", "audit.jsonl")
    assert again == held
    assert CheckpointStore().get("demo", "conn-1", "audit.jsonl") is None


def test_the_store_keeps_a_checkpoint_per_audit_file(tmp_path: Path) -> None:
    """Replicas of one connector id write audit-1.jsonl and audit-2.jsonl: two chains, each with
    its own checkpoint; a lower seq of one file is no regression of the other's."""
    keys = [KEY.public_key()]
    store = CheckpointStore(tmp_path / "checkpoints.json")

    def offer(seq: int, head: str, file: str) -> str:
        fields = signed(seq, head, file=file)
        return store.offer(fields, keys, tunnel="demo", connector_id="conn-1")[0]

    assert offer(9, "aa" * 32, "audit-1.jsonl") == "stored"
    assert offer(3, "bb" * 32, "audit-2.jsonl") == "stored"  # lower, but another file
    assert offer(10, "cc" * 32, "audit-1.jsonl") == "stored"
    assert offer(4, "dd" * 32, "audit-2.jsonl") == "stored"
    assert offer(3, "ee" * 32, "audit-2.jsonl") == "regressed"  # within its own file
    assert store.files("demo", "conn-1") == ["audit-1.jsonl", "audit-2.jsonl"]
    assert store.files("demo", "conn-2") == []
    first = store.get("demo", "conn-1", "audit-1.jsonl")
    second = store.get("demo", "conn-1", "audit-2.jsonl")
    assert first is not None
    assert second is not None
    assert (first["checkpoint"]["seq"], first["conflict"]) == (10, None)
    assert (second["checkpoint"]["seq"], second["conflict"]["seq"]) == (4, 4)
    doc = json.loads((tmp_path / "checkpoints.json").read_text())
    assert doc["version"] == 2
    reread = CheckpointStore(tmp_path / "checkpoints.json")
    assert reread.get("demo", "conn-1", "audit-2.jsonl") == second
    assert reread.files("demo", "conn-1") == ["audit-1.jsonl", "audit-2.jsonl"]


def test_a_checkpoint_file_kept_per_connector_is_read(tmp_path: Path) -> None:
    """The shape before checkpoints were kept per audit file: one item per (tunnel, connector
    id), no version. Its checkpoint is kept for its file; a conflict of the same file stays; a
    conflict naming another file (replicas overwriting each other) is that file's checkpoint."""
    path = tmp_path / "checkpoints.json"
    single = signed(7, "aa" * 32)
    cut, later = (
        signed(5, "bb" * 32, connector_id="conn-2"),
        signed(6, "cc" * 32, connector_id="conn-2"),
    )
    other = signed(9, "dd" * 32, connector_id="conn-3", file="audit-1.jsonl")
    replica = signed(2, "ee" * 32, connector_id="conn-3", file="audit-2.jsonl")
    path.write_text(
        json.dumps(
            {
                "checkpoints": [
                    {"checkpoint": single, "received_at": 1, "conflict": None},
                    {"checkpoint": later, "received_at": 2, "conflict": cut},
                    {"checkpoint": replica, "received_at": 3, "conflict": other},
                ]
            }
        )
    )
    store = CheckpointStore(path)
    assert store.get("demo", "conn-1", "audit.jsonl") == {
        "checkpoint": single,
        "received_at": 1,
        "conflict": None,
    }
    assert store.get("demo", "conn-2", "audit.jsonl") == {
        "checkpoint": later,
        "received_at": 2,
        "conflict": cut,
    }
    assert store.files("demo", "conn-3") == ["audit-1.jsonl", "audit-2.jsonl"]
    assert store.get("demo", "conn-3", "audit-1.jsonl") == {
        "checkpoint": other,
        "received_at": 3,
        "conflict": None,
    }
    assert store.get("demo", "conn-3", "audit-2.jsonl") == {
        "checkpoint": replica,
        "received_at": 3,
        "conflict": None,
    }
    # it goes on from there: the next change writes the per-file shape, read back the same
    keys = [KEY.public_key()]
    assert store.offer(signed(8, "ff" * 32), keys, tunnel="demo", connector_id="conn-1")[0] == (
        "stored"
    )
    again = CheckpointStore(path)
    assert again.files("demo", "conn-3") == ["audit-1.jsonl", "audit-2.jsonl"]
    assert again.get("demo", "conn-2", "audit.jsonl") == store.get("demo", "conn-2", "audit.jsonl")


def test_cli_verify_against_a_saved_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        for i in range(4):
            log.write_sync(rec(i))
    head = verify_files([path]).head
    saved = tmp_path / "checkpoint.json"
    saved.write_text(json.dumps({"checkpoint": signed(4, head), "conflict": None}))
    public = encode_public_key(KEY)
    args = ["audit", "verify", str(path), "--checkpoint", str(saved), "--public-key", public]
    assert main(args) == 0
    assert "checkpoint: matches record 4" in capsys.readouterr().out

    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))
    assert main(["audit", "verify", str(path)]) == 0  # the chain alone cannot tell
    assert main(args) == 3
    assert "truncated: the file ends at record 3 but the relay's checkpoint covers record 4" in (
        capsys.readouterr().err
    )
    # a checkpoint of the same seq with another head: replaced, not truncated
    saved.write_text(json.dumps(signed(3, "ab" * 32)))
    assert main(args) == 3
    assert "the head does not match the checkpoint: record 3 has hash" in capsys.readouterr().err
    # the signature is checked with the connector's key: another key, or none, is exit 4
    (tmp_path / "other.pub").write_text(encode_public_key(OTHER) + "\n")
    assert main([*args[:-1], str(tmp_path / "other.pub")]) == 4
    assert "does not verify" in capsys.readouterr().err
    assert main(args[:-2]) == 4
    assert "--public-key" in capsys.readouterr().err
    saved.write_text(json.dumps({"checkpoint": None}))
    assert main(args) == 4
    assert "holds no checkpoint" in capsys.readouterr().err


def test_the_audit_file_name_of_the_verified_files() -> None:
    """audit verify --checkpoint asks the relay for the checkpoint of the file it verifies."""
    from connector.checkpoints import audit_file_name

    assert audit_file_name([Path("/var/lib/edgetds/audit-2.jsonl")]) == "audit-2.jsonl"
    rotated = ["audit-2.jsonl.000000000100", "audit-2.jsonl.000000000200"]
    assert audit_file_name(rotated) == "audit-2.jsonl"  # rotated files only
    assert audit_file_name([*rotated, "d/audit-2.jsonl"]) == "audit-2.jsonl"
    assert audit_file_name(["audit.jsonl.backup"]) == "audit.jsonl.backup"


def test_relay_config_keys_and_a_damaged_checkpoint_file(tmp_path: Path) -> None:
    from identity.keys import generate_key_files
    from relay.config import ConfigError as RelayConfigError
    from relay.config import config_from_mapping

    key = generate_key_files(tmp_path, "relay")
    relay = {"private_key_file": key.private_path.name, "checkpoint_file": "checkpoints.json"}
    doc: dict[str, Any] = {
        "relay": relay,
        "tunnels": {"demo": {"connectors": {"conn-1": encode_public_key(KEY)}}},
        "issuers": [{"issuer": "http://127.0.0.1:1", "audience": "edgetds"}],
    }
    digest = "ab" * 32
    relay["audit_token_sha256"] = digest.upper()
    config = config_from_mapping(doc, base_dir=tmp_path, where="relay.toml")
    assert config.audit_token_sha256 == digest
    assert config.checkpoint_file == str(tmp_path / "checkpoints.json")
    relay["audit_token_sha256"] = "not-a-digest"
    with pytest.raises(RelayConfigError, match="audit_token_sha256 must be 64 hex digits"):
        config_from_mapping(doc, base_dir=tmp_path, where="relay.toml")
    (tmp_path / "checkpoints.json").write_text("{not json")
    with pytest.raises(RelayConfigError, match="move it aside"):
        CheckpointStore(tmp_path / "checkpoints.json")
