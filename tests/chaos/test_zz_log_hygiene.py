"""Last of the attack and chaos tests (pytest runs tests/attacks, then tests/chaos in file order):
no token, key, password or redacted parameter value used by those tests appears in any log or
audit file they produced (connector and relay process logs, audit chains, workerd's log, the
in-process relay's log lines, tdslite's statement log)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.chaos import HYGIENE, Hygiene


def test_the_grep_finds_a_planted_secret(tmp_path: Path) -> None:
    planted = tmp_path / "planted.log"
    planted.write_text("user token eyJplanted.secret.value in a log line\n")
    probe = Hygiene()
    probe.secret("eyJplanted.secret.value", "a planted token")
    probe.file(planted, tmp_path / "missing.log")
    assert probe.leaks() == [f"{planted}: contains a planted token"]


def test_no_secret_in_any_log_or_audit_file() -> None:
    if not HYGIENE.secrets:
        pytest.skip("nothing recorded: run it with tests/attacks and tests/chaos")
    existing = sorted(p for p in HYGIENE.files if p.exists() and p.stat().st_size > 0)
    kinds = {p.name for p in existing}
    print(f"\nlog hygiene: {len(HYGIENE.secrets)} secrets x {len(existing)} files {sorted(kinds)}")
    assert "audit.jsonl" in kinds, "no audit file was produced: the grep would prove nothing"
    assert any(name.startswith("conn-") and name.endswith(".log") for name in kinds)
    assert HYGIENE.leaks() == []
