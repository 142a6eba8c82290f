"""Requests per second per client: a token bucket each (burst: 2 seconds' worth).

Used by the gateway's socket thread only. Buckets of clients idle long enough to be full
again are forgotten (a new bucket starts full, so nothing changes for them): clients
that come and go, each with a new identity in plain mode, do not pile up.
"""

from __future__ import annotations

BURST_S = 2.0
SWEEP_EVERY_S = 10.0


class RateLimiter:
    def __init__(self, rate_per_s: float):
        self.rate = rate_per_s  # 0 or less: no limit
        self._buckets: dict[bytes, list[float]] = {}  # client -> [tokens, last seen]
        self._swept = 0.0

    def __len__(self) -> int:
        return len(self._buckets)

    def admit(self, client: bytes, now: float) -> bool:
        rate = self.rate
        if rate <= 0:
            return True
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = [rate * BURST_S, now]
        tokens = min(rate * BURST_S, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens < 1:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1
        return True

    def sweep(self, now: float) -> None:
        """Forget the buckets that are full again (at most every `SWEEP_EVERY_S`)."""
        if self.rate <= 0 or now - self._swept < SWEEP_EVERY_S:
            return
        self._swept = now
        idle = [c for c, (_, seen) in self._buckets.items() if now - seen >= BURST_S]
        for client in idle:
            del self._buckets[client]
