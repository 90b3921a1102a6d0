"""connector/_readonly.py remembers verdicts of short statements by their exact text: the same
statement gets the same verdict object, a refusal stays a refusal, and long statements are
checked every time."""

from __future__ import annotations

from connector._readonly import _CACHED_SQL_CHARS, _check_remembered, check_read_only


def test_same_text_same_verdict_refusals_too() -> None:
    sql = "SELECT id FROM t WHERE id = @id -- remembered"
    first = check_read_only(sql)
    assert first.allowed
    assert check_read_only(sql) is first
    bad = "SELECT 1; DROP TABLE t"
    refused = check_read_only(bad)
    assert not refused.allowed
    assert check_read_only(bad) is refused
    # one character different: checked on its own
    assert not check_read_only("SELECT id INTO x FROM t WHERE id = @id -- remembered").allowed


def test_long_statements_are_not_remembered() -> None:
    long_sql = "SELECT " + " + ".join(["1"] * (_CACHED_SQL_CHARS // 4)) + " AS n"
    assert len(long_sql) > _CACHED_SQL_CHARS
    before = _check_remembered.cache_info().currsize
    verdict = check_read_only(long_sql)
    assert verdict.allowed
    assert _check_remembered.cache_info().currsize == before
    assert check_read_only(long_sql) is not verdict


def test_non_text_is_refused_not_remembered() -> None:
    before = _check_remembered.cache_info().currsize
    assert not check_read_only(None).allowed  # type: ignore[arg-type]
    assert _check_remembered.cache_info().currsize == before
