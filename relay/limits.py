"""Edge protections that cost almost nothing: token-bucket rate limiters and refusal counters.

* `RateLimiter` keeps one token bucket per key (a client address, or an identity) in a bounded LRU
  map, so a scan from many addresses cannot grow memory without bound. It is pure: the caller passes
  the clock (`trio.current_time()` in the relay, plain numbers in tests).
* `RefusalCounters` counts every refusal by its error code; `GET /v1/relay/stats` shows them, so an
  idle endpoint that attracts scans is visible without reading logs.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import dataclass

__all__ = ["RateLimiter", "RefusalCounters"]


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets: each key may spend `burst` at once and regains `rate` tokens per second.

    A rate of 0 disables the limiter (every `allow` succeeds).
    """

    def __init__(self, *, rate: float, burst: int, max_keys: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.max_keys = max(1, max_keys)
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.burst), stamp=now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        return bucket

    def retry_after(self, key: str, now: float) -> float:
        """0 if `key` may act now, else the seconds until it may (does not spend a token)."""
        if not self.enabled or key not in self._buckets:
            return 0.0
        bucket = self._bucket(key, now)
        return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) / self.rate

    def spend(self, key: str, now: float) -> float:
        """Spend one token for `key`: 0 if allowed, else the seconds to wait (nothing spent)."""
        if not self.enabled:
            return 0.0
        bucket = self._bucket(key, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after_header(seconds: float) -> str:
    """Retry-After is whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


class RefusalCounters:
    """How many requests were refused, by error code; plus a few totals."""

    def __init__(self) -> None:
        self.refused: Counter[str] = Counter()
        self.totals: Counter[str] = Counter()

    def refuse(self, code: str) -> None:
        self.refused[code] += 1

    def count(self, name: str, n: int = 1) -> None:
        self.totals[name] += n

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {"refused": dict(sorted(self.refused.items())), "totals": dict(self.totals)}
