"""Request metrics of the gateway (the `system.metrics` op): per op, a count of outcomes,
their error codes, and a cumulative histogram of latencies in logarithmic buckets
(bucket i holds latencies in [10 us * 1.25^i, 10 us * 1.25^(i+1)); bucket 0 also holds
anything shorter). Owned by the socket thread, so no lock.
"""

from __future__ import annotations

import math
from typing import Any

#: the latency histogram: bucket i covers [BASE * FACTOR**i, BASE * FACTOR**(i+1)) (in
#: microseconds); bucket 0 also takes anything shorter, the last one anything longer
BUCKET_BASE_US = 10.0
BUCKET_FACTOR = 1.25
BUCKETS = 100  # the last bucket starts at 10 us * 1.25**99: about 11 hours
_PER_SECOND = 1e6 / BUCKET_BASE_US
_INV_LOG_FACTOR = 1.0 / math.log(BUCKET_FACTOR)
#: the metrics name of an op the server does not know (a bounded set of names)
UNKNOWN_OP = "(unknown)"


def bucket_of(seconds: float) -> int:
    """The histogram bucket of a latency."""
    x = seconds * _PER_SECOND
    if x <= 1.0:
        return 0
    return min(int(math.log(x) * _INV_LOG_FACTOR), BUCKETS - 1)


def percentile_ms(hist: dict[Any, int], q: float, *, base_us: float = BUCKET_BASE_US,
                  factor: float = BUCKET_FACTOR, cap_ms: float | None = None) -> float | None:
    """The `q` quantile (0 < q <= 1) of a histogram {bucket index (int or str): count}, as
    the upper bound of the bucket it falls in, in milliseconds (at most `cap_ms`, when
    given: the largest latency seen); None for an empty histogram."""
    counts = sorted((int(i), n) for i, n in hist.items() if n > 0)
    total = sum(n for _, n in counts)
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total - 1e-9))
    seen, index = 0, counts[-1][0]
    for i, n in counts:
        seen += n
        if seen >= rank:
            index = i
            break
    upper = base_us * factor ** (index + 1) / 1000.0
    return upper if cap_ms is None else min(upper, cap_ms)


class OpStats:
    """One op's outcomes since the start: owned by the socket thread."""

    __slots__ = ("count", "errors", "hist", "max_s", "ok")

    def __init__(self):
        self.count = 0
        self.ok = 0
        self.errors: dict[str, int] = {}
        self.hist = [0] * BUCKETS
        self.max_s = 0.0

    def add(self, code: str | None, seconds: float) -> None:
        self.count += 1
        if code is None:
            self.ok += 1
        else:
            self.errors[code] = self.errors.get(code, 0) + 1
        self.hist[bucket_of(seconds)] += 1
        if seconds > self.max_s:
            self.max_s = seconds

    def to_map(self) -> dict[str, Any]:
        hist = {str(i): n for i, n in enumerate(self.hist) if n}
        max_ms = round(self.max_s * 1000.0, 3)
        return {"count": self.count, "ok": self.ok, "errors": dict(self.errors),
                "p50_ms": _rounded(percentile_ms(hist, 0.50, cap_ms=max_ms)),
                "p99_ms": _rounded(percentile_ms(hist, 0.99, cap_ms=max_ms)),
                "max_ms": max_ms, "histogram": hist}


def _rounded(ms: float | None) -> float:
    return 0.0 if ms is None else round(ms, 3)


class GatewayCollector:
    """The gateway's request counts for the Prometheus endpoint (`actors.metrics`), read at
    scrape time. The socket thread owns them: a scrape copies each dict in one step (one
    C call under the GIL) and reads plain ints, so it never waits for the socket thread."""

    def __init__(self, server):
        self.server = server

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        done = CounterMetricFamily("capflow_requests", "Requests answered, by op and outcome "
                                   "(ok, or the error code)", labels=["op", "outcome"])
        for op, stats in sorted(dict(self.server._op_stats).items()):
            done.add_metric([op, "ok"], stats.ok)
            for code, n in sorted(dict(stats.errors).items()):
                done.add_metric([op, code], n)
        yield done
        refused = CounterMetricFamily("capflow_requests_refused",
                                      "Requests refused before any op ran, by error code",
                                      labels=["code"])
        for code, n in sorted(dict(self.server._refused).items()):
            refused.add_metric([code], n)
        yield refused
        g = GaugeMetricFamily("capflow_requests_in_flight", "Requests not answered yet")
        g.add_metric([], len(self.server._pending))
        yield g


def register_gateway(system, server):
    """Add the gateway's collector to the System's metrics registry, if it serves metrics;
    returns what unregisters it (None: nothing registered)."""
    metrics = getattr(system, "metrics", None)
    if metrics is None:
        return None
    collector = GatewayCollector(server)
    metrics.registry.register(collector)
    return lambda: metrics.registry.unregister(collector)

