"""Full-jitter exponential backoff for reconnects (what cloudflared does; chisel/ngrok-go do not).

The n-th consecutive failure sleeps uniform in [0, min(cap, base * 2**n)). The counter resets only
after a connection stayed up for ``stable_after`` seconds, so a relay that accepts and then drops
connections at once cannot pull the connector into a tight reconnect loop, and a fleet of
connectors spreads its reconnects instead of stampeding a restarted relay.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    base: float = 1.0
    cap: float = 30.0
    stable_after: float = 30.0
    failures: int = 0
    rng: random.Random = field(default_factory=random.SystemRandom, repr=False)

    def ceiling(self) -> float:
        """Upper bound of the next delay: min(cap, base * 2**failures)."""
        # cap the exponent: 2**n overflows to inf long before anyone waits that long
        return float(min(self.cap, self.base * 2.0 ** min(self.failures, 62)))

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        delay = self.rng.uniform(0, self.ceiling())
        self.failures += 1
        return delay

    def connection_ended(self, uptime_s: float) -> None:
        """A connection that had been established ended after uptime_s seconds."""
        if uptime_s >= self.stable_after:
            self.failures = 0

    def reset(self) -> None:
        self.failures = 0
