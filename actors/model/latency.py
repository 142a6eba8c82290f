"""`Latency`: a histogram of how long orders took from their send to the venue's
acknowledgement, kept by the one thread that sends them (a live adapter's venue worker)
and read by any other (the metrics endpoint, `actors.metrics`).

Observing is a bucket search and three plain writes, with no lock: one writer. A reader
may see an observation in the count and not yet in its bucket (or the other way round)
for one scrape; the next one agrees.
"""

from __future__ import annotations

from bisect import bisect_left

#: upper bounds of the buckets, in seconds (a last, unbounded one is implied)
BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Latency:
    def __init__(self, bounds: tuple[float, ...] = BOUNDS):
        self.bounds = bounds
        #: observations per bucket (not cumulative); the last is above every bound
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def buckets(self) -> list[tuple[float, int]]:
        """(upper bound, cumulative count) per bucket, the last one ``inf``."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), list(self.counts), strict=True):
            total += n
            out.append((bound, total))
        return out
