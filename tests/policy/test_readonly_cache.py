"""connector/_readonly.py remembers verdicts by the SHA-256 of the text, for statements of any
size: the same statement gets the same verdict object, a refusal stays a refusal, a check that
raised is not remembered, and the cache holds digests, never the text; the audit's fingerprints
are remembered the same way."""

from __future__ import annotations

import uuid

import pytest

from connector import _readonly
from connector._readonly import _VERDICTS, _Verdicts, check_read_only, remembered_verdict


def test_same_text_same_verdict_refusals_too() -> None:
    sql = "SELECT id FROM t WHERE id = @id -- remembered"
    first = check_read_only(sql)
    assert first.allowed
    assert check_read_only(sql) is first
    bad = "SELECT 1; DROP TABLE t"
    refused = check_read_only(bad)
    assert not refused.allowed
    assert check_read_only(bad) is refused
    assert remembered_verdict(bad) is refused
    # one character different: checked on its own
    assert not check_read_only("SELECT id INTO x FROM t WHERE id = @id -- remembered").allowed


def test_long_statements_are_remembered_too() -> None:
    tag = uuid.uuid4().hex  # a text no earlier test checked
    long_sql = f"SELECT '{tag}' AS tag, {' + '.join(['1'] * 20_000)} AS n"
    assert len(long_sql) > 64 * 1024
    verdict = check_read_only(long_sql)
    assert verdict.allowed
    assert check_read_only(long_sql) is verdict
    long_bad = long_sql + "; DELETE FROM t"
    refused = check_read_only(long_bad)
    assert not refused.allowed
    assert check_read_only(long_bad) is refused


def test_the_cache_holds_digests_and_forgets_the_oldest() -> None:
    check_read_only("SELECT 2 AS two")
    assert all(isinstance(k, bytes) and len(k) == 32 for k in _VERDICTS._items)
    small = _Verdicts(maxsize=2)
    a, b, c = (check_read_only(f"SELECT {n}") for n in (1, 2, 3))
    small.put(b"a", a)
    small.put(b"b", b)
    assert small.get(b"a") is a  # now the most recently used
    small.put(b"c", c)
    assert (small.get(b"a"), small.get(b"b"), small.get(b"c")) == (a, None, c)
    assert len(small) == 2


def test_non_text_is_refused_not_remembered() -> None:
    before = len(_VERDICTS)
    assert not check_read_only(None).allowed  # type: ignore[arg-type]
    assert remembered_verdict(None) is None  # type: ignore[arg-type]
    assert len(_VERDICTS) == before


def test_a_check_that_raised_is_refused_and_not_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sql = f"SELECT 1 AS one -- {uuid.uuid4().hex}"

    def surprise(text: str) -> _readonly.ReadOnlyVerdict:
        raise RecursionError("sqlglot went too deep")

    monkeypatch.setattr(_readonly, "_check", surprise)
    verdict = check_read_only(sql)
    assert not verdict.allowed
    assert "RecursionError" in verdict.reason
    assert remembered_verdict(sql) is None
    monkeypatch.undo()
    assert check_read_only(sql).allowed  # checked afresh, not the remembered failure


def test_fingerprints_are_remembered_by_digest() -> None:
    sql = f"SELECT id FROM t WHERE tag = '{uuid.uuid4().hex}'"
    assert _readonly.remembered_fingerprint(sql) is None
    fingerprint = _readonly.sql_fingerprint(sql)
    assert _readonly.remembered_fingerprint(sql) == fingerprint
    # literals still group: another literal, same fingerprint (remembered under its own digest)
    other = "SELECT id FROM t WHERE tag = 'x'"
    assert _readonly.sql_fingerprint(other) == fingerprint
    assert all(isinstance(k, bytes) and len(k) == 32 for k in _readonly._FINGERPRINTS._items)
