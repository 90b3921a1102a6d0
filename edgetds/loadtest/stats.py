"""What a load-test run measured: an HDR latency histogram, counters, and a sampled timeline.

`Recorder` is fed one `QueryOutcome` per query by the runner (one Trio thread, no locks needed) and
turns into a `RunResult` (plain JSON-ready data) at the end. Latencies are kept in microseconds
in an HDR histogram (1 us .. 1 h, 3 significant digits), so percentiles are exact to 0.1 %
whatever the number of queries; the timeline for the plot is a reservoir sample of at most
`TIMELINE_MAX` points, so memory stays flat on long runs.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from hdrh.histogram import HdrHistogram

__all__ = [
    "QueryOutcome",
    "Recorder",
    "RunResult",
    "Snapshot",
    "mean_value",
    "new_histogram",
    "values_at",
]

#: points kept for the latency-over-time plot
TIMELINE_MAX = 20_000
#: characters kept of an error's sample message
SAMPLE_MAX = 300
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9))


def new_histogram() -> HdrHistogram:
    """Microseconds from 1 us to 1 hour, 3 significant digits."""
    return HdrHistogram(1, 3_600_000_000, 3)


@dataclass(frozen=True)
class QueryOutcome:
    """How one query ended: ``code`` is None when it succeeded, else an error code."""

    code: str | None
    rows: int = 0
    nbytes: int = 0
    #: what the relay or SQL Server said about an error (the report keeps one per code)
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.code is None


@dataclass(frozen=True)
class Snapshot:
    """Live figures for the progress display."""

    elapsed_s: float
    count: int
    ok: int
    errors: int
    qps: float
    p50_ms: float
    p99_ms: float
    rows: int


def _counts_index(hist: HdrHistogram) -> Callable[[int], int]:
    """``hist``'s counts-array index of a value: hdrh's ``_counts_index_for`` as one expression
    (hdrh takes six Python calls and a ``bin()`` string per value). A value's bucket is the
    bit length of ``value | sub_bucket_mask`` (hdrh: 64 minus its count of leading zeros) less
    the unit and sub-bucket magnitudes; its sub-bucket the value shifted by the bucket and unit."""
    mask: int = hist.sub_bucket_mask
    unit: int = hist.unit_magnitude
    magnitude: int = hist.sub_bucket_half_count_magnitude
    base = unit + magnitude + 1
    half: int = hist.sub_bucket_half_count

    def index(value: int) -> int:
        bucket = (value | mask).bit_length() - base
        return ((bucket + 1) << magnitude) + (value >> (bucket + unit)) - half

    return index


def _add(hist: HdrHistogram, index: int, value: int) -> None:
    """``hist.record_value(value)`` for a value whose counts index is ``index`` (in range)."""
    hist.counts[index] += 1
    hist.total_count += 1
    if value < hist.min_value:
        hist.min_value = value
    if value > hist.max_value:
        hist.max_value = value


@dataclass
class _PerQuery:
    hist: HdrHistogram = field(default_factory=new_histogram)
    errors: int = 0


class Recorder:
    """Accumulates outcomes of one run (a target: "tunnel" or "direct")."""

    def __init__(
        self,
        target: str,
        *,
        seed: int | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.target = target
        #: The run's clock (seconds): `drive` takes due and end times from it, so a run under
        #: trio's MockClock is measured in virtual time; latency is not wall-clock time.
        self.clock = clock
        self.hist = new_histogram()
        self._index = _counts_index(self.hist)  # every histogram here has the same layout
        self._counts_len = self.hist.counts_len
        self.errors: Counter[str] = Counter()
        self.samples: dict[str, str] = {}  # error code -> the first message seen for it
        self.ok = 0
        self.rows = 0
        self.nbytes = 0
        self.by_query: dict[str, _PerQuery] = {}
        self.timeline: list[tuple[float, float, bool]] = []  # (t_s, latency_ms, ok)
        self._seen = 0
        self._rng = random.Random(seed)
        self.started = 0.0  # set by `start`
        self.started_wall = time.time()
        self.ended: float | None = None

    def start(self) -> None:
        self.started = self.clock()
        self.started_wall = time.time()

    def record(self, query: str, start: float, end: float, outcome: QueryOutcome) -> None:
        """Record one query that was due at ``start`` and ended at ``end`` (`clock` seconds)."""
        micros = max(1, round((end - start) * 1e6))
        per = self.by_query.get(query)
        if per is None:
            per = self.by_query[query] = _PerQuery()
        index = self._index(micros)
        if index < self._counts_len:  # else past the histogram's range: hdrh drops it too
            _add(self.hist, index, micros)
            _add(per.hist, index, micros)
        if outcome.code is None:
            self.ok += 1
        else:
            self.errors[outcome.code] += 1
            per.errors += 1
            if outcome.message and outcome.code not in self.samples:
                self.samples[outcome.code] = outcome.message[:SAMPLE_MAX]
        self.rows += outcome.rows
        self.nbytes += outcome.nbytes
        point = (round(end - self.started, 4), micros / 1000, outcome.code is None)
        self._seen += 1
        if len(self.timeline) < TIMELINE_MAX:
            self.timeline.append(point)
        else:  # reservoir sampling (algorithm R): every query equally likely to be plotted
            slot = self._rng.randrange(self._seen)
            if slot < TIMELINE_MAX:
                self.timeline[slot] = point

    def finish(self) -> None:
        self.ended = self.clock()

    @property
    def count(self) -> int:
        return self.ok + sum(self.errors.values())

    def snapshot(self) -> Snapshot:
        elapsed = (self.ended or self.clock()) - self.started
        count = self.count
        p50, p99 = values_at(self.hist, (50, 99))
        return Snapshot(
            elapsed_s=elapsed,
            count=count,
            ok=self.ok,
            errors=count - self.ok,
            qps=count / elapsed if elapsed > 0 else 0.0,
            p50_ms=p50 / 1000 if count else 0.0,
            p99_ms=p99 / 1000 if count else 0.0,
            rows=self.rows,
        )

    def result(self, **context: Any) -> RunResult:
        """The final figures; ``context`` (mode, concurrency, url, ...) is stored as given."""
        snap = self.snapshot()
        return RunResult(
            target=self.target,
            started_at=self.started_wall,
            duration_s=round(snap.elapsed_s, 4),
            count=snap.count,
            ok=self.ok,
            errors=snap.errors,
            errors_by_code=dict(sorted(self.errors.items())),
            error_samples=dict(sorted(self.samples.items())),
            rows=self.rows,
            bytes=self.nbytes,
            throughput_qps=round(snap.qps, 3),
            rows_per_s=round(self.rows / snap.elapsed_s, 3) if snap.elapsed_s > 0 else 0.0,
            latency_ms=latency_summary(self.hist),
            by_query={
                name: {
                    "count": per.hist.get_total_count(),
                    "errors": per.errors,
                    **latency_summary(per.hist),
                }
                for name, per in sorted(self.by_query.items())
            },
            distribution=distribution(self.hist),
            timeline=sorted(self.timeline),
            context=dict(context),
        )


def _recorded(hist: HdrHistogram) -> list[tuple[int, int]]:
    """(slot index, count) of every slot with a count, in order: only the slots between the
    minimum's and the maximum's are read (the histogram tracks both as it records)."""
    if not hist.total_count:
        return []
    first = max(0, hist.get_counts_array_index(hist.min_value))
    last = min(hist.counts_len - 1, hist.get_counts_array_index(hist.max_value))
    counts = hist.counts[first : last + 1]
    return [(first + offset, count) for offset, count in enumerate(counts) if count]


def values_at(hist: HdrHistogram, percentiles: Sequence[float]) -> list[int]:
    """``hist.get_value_at_percentile(p)`` for each of ``percentiles``, in one pass.

    hdrh walks the whole counts array (tens of thousands of slots, in Python) for every
    percentile it is asked; a run's result asks some forty, which cost the load generator more
    CPU than a few hundred queries. Here the walk visits the recorded slots only, once, with
    hdrh's own rules (the first slot whose running count reaches the percentile's target count;
    its highest equivalent value, its lowest for percentile 0), so the values are hdrh's exactly.
    """
    recorded = _recorded(hist)
    order = sorted(range(len(percentiles)), key=lambda i: percentiles[i])
    out = [0] * len(percentiles)
    slots = iter(recorded)
    index, total = -1, 0
    for i in order:
        target = hist.get_target_count_at_percentile(percentiles[i])
        while total < target:
            step = next(slots, None)
            if step is None:
                break
            index, total = step[0], total + step[1]
        if total < target:
            continue  # an empty histogram: hdrh answers 0
        value = hist.get_value_from_index(index)
        if percentiles[i]:
            out[i] = hist.get_highest_equivalent_value(value)
        else:
            out[i] = hist.get_lowest_equivalent_value(value)
    return out


def mean_value(hist: HdrHistogram) -> float:
    """``hist.get_mean_value()`` over the recorded slots only (see `values_at`)."""
    if not hist.total_count:
        return 0.0
    total = 0
    for index, count in _recorded(hist):
        value = hist.get_value_from_index(index)
        low = hist.get_lowest_equivalent_value(value)
        high = hist.get_highest_equivalent_value(value)
        total += count * (low + ((high - low + 1) >> 1))  # the slot's median value
    return float(total) / int(hist.total_count)


def latency_summary(hist: HdrHistogram) -> dict[str, float]:
    """p50/p90/p99/p99.9/max/min/mean in milliseconds (zeros for an empty histogram)."""
    if hist.get_total_count() == 0:
        return {name: 0.0 for name in ("p50", "p90", "p99", "p99_9", "max", "min", "mean")}
    values = values_at(hist, [p for _, p in PERCENTILES])
    out = {name: value / 1000 for (name, _), value in zip(PERCENTILES, values, strict=True)}
    out["max"] = hist.get_max_value() / 1000
    out["min"] = hist.get_min_value() / 1000
    out["mean"] = round(mean_value(hist) / 1000, 4)
    return out


#: the percentiles of the distribution plot (a log-ish scale)
DISTRIBUTION = (0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100)


def distribution(hist: HdrHistogram) -> list[tuple[float, float]]:
    """(percentile, latency_ms) points on a log-ish percentile scale, for the distribution plot."""
    if hist.get_total_count() == 0:
        return []
    values = values_at(hist, DISTRIBUTION)
    return [(float(p), value / 1000) for p, value in zip(DISTRIBUTION, values, strict=True)]


@dataclass(frozen=True)
class RunResult:
    """One run's figures (JSON-ready via `as_json`)."""

    target: str
    started_at: float
    duration_s: float
    count: int
    ok: int
    errors: int
    errors_by_code: dict[str, int]
    error_samples: dict[str, str]
    rows: int
    bytes: int
    throughput_qps: float
    rows_per_s: float
    latency_ms: dict[str, float]
    by_query: dict[str, dict[str, float]]
    distribution: list[tuple[float, float]]
    timeline: list[tuple[float, float, bool]]
    context: dict[str, Any]

    @property
    def error_rate(self) -> float:
        """Failed queries over all queries (0.0 for a run that ran none)."""
        return self.errors / self.count if self.count else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            **self.context,
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "count": self.count,
            "ok": self.ok,
            "errors": self.errors,
            "errors_by_code": self.errors_by_code,
            "error_samples": self.error_samples,
            "rows": self.rows,
            "bytes": self.bytes,
            "throughput_qps": self.throughput_qps,
            "rows_per_s": self.rows_per_s,
            "latency_ms": self.latency_ms,
            "by_query": self.by_query,
            "distribution": [list(p) for p in self.distribution],
            "timeline": [list(p) for p in self.timeline],
        }
