"""The run's figures come from one pass over the recorded slots of the HDR histogram: they must be
the figures hdrh's own (whole-array) methods give, for any recorded latencies."""

from __future__ import annotations

import random

import pytest

from edgetds.loadtest.stats import (
    DISTRIBUTION,
    PERCENTILES,
    QueryOutcome,
    Recorder,
    mean_value,
    new_histogram,
    values_at,
)

_RNG = random.Random(5)
ASKED = [p for _, p in PERCENTILES] + list(DISTRIBUTION) + [0.0, 33.3, 100.0]


def _filled(values: list[int]) -> object:
    hist = new_histogram()
    for value in values:
        hist.record_value(value)
    return hist


@pytest.mark.parametrize(
    "values",
    [
        [],
        [1],
        [1_234],
        [1, 3_600_000_000],
        [5] * 7 + [2_000_000],
        [_RNG.choice([1, 900, 1_500, 40_000, 60_000_000]) for _ in range(997)],
    ],
)
def test_percentiles_and_mean_are_hdrh_figures(values: list[int]) -> None:
    hist = _filled(values)
    assert values_at(hist, ASKED) == [hist.get_value_at_percentile(p) for p in ASKED]
    assert mean_value(hist) == hist.get_mean_value()


@pytest.mark.parametrize("seed", range(20))
def test_random_latencies_give_hdrh_figures(seed: int) -> None:
    rng = random.Random(seed)
    values = [max(1, round(rng.lognormvariate(7, 2))) for _ in range(rng.randrange(1, 3000))]
    hist = _filled(values)
    assert values_at(hist, ASKED) == [hist.get_value_at_percentile(p) for p in ASKED]
    assert mean_value(hist) == pytest.approx(hist.get_mean_value(), rel=1e-12)


def test_result_and_snapshot_report_hdrh_figures() -> None:
    recorder = Recorder("tunnel", seed=1, clock=lambda: 0.0)
    recorder.start()
    rng = random.Random(3)
    for i in range(500):
        end = rng.uniform(0.0005, 0.02) if i % 50 else rng.uniform(1, 30)
        recorder.record("a" if i % 3 else "b", 0.0, end, QueryOutcome(None, 1, 10))
    hist = recorder.hist
    result = recorder.result()
    assert result.latency_ms["p99"] == hist.get_value_at_percentile(99) / 1000
    assert result.latency_ms["mean"] == round(hist.get_mean_value() / 1000, 4)
    assert result.distribution == [
        (float(p), hist.get_value_at_percentile(p) / 1000) for p in DISTRIBUTION
    ]
    per = recorder.by_query["b"].hist
    assert result.by_query["b"]["p50"] == per.get_value_at_percentile(50) / 1000
    snap = recorder.snapshot()
    assert (snap.p50_ms, snap.p99_ms) == (
        hist.get_value_at_percentile(50) / 1000,
        hist.get_value_at_percentile(99) / 1000,
    )


@pytest.mark.parametrize("seed", range(5))
def test_recorded_histograms_are_what_hdrh_records(seed: int) -> None:
    # the recorder computes a value's slot itself: the same counts, total, min and max as
    # hdrh's record_value, including the first slots, bucket edges and values past the range
    rng = random.Random(seed)
    edges = [2**k + d for k in range(1, 33) for d in (-1, 0, 1)]
    micros = [max(1, round(rng.lognormvariate(9, 3))) for _ in range(3000)] + edges
    micros += [1, 2047, 2048, 3_600_000_000, 3_600_000_001, 2**36, 5 * 10**9]
    rng.shuffle(micros)
    recorder = Recorder("tunnel", clock=lambda: 0.0)
    recorder.start()
    expected = {"a": new_histogram(), "b": new_histogram()}
    overall = new_histogram()
    for i, value in enumerate(micros):
        name = "ab"[i % 2]
        recorder.record(name, 0.0, value / 1e6, QueryOutcome(None))
        overall.record_value(value)
        expected[name].record_value(value)
    for got, want in [(recorder.hist, overall)] + [
        (recorder.by_query[n].hist, expected[n]) for n in "ab"
    ]:
        assert list(got.counts) == list(want.counts)
        assert (got.total_count, got.min_value, got.max_value) == (
            want.total_count,
            want.min_value,
            want.max_value,
        )
