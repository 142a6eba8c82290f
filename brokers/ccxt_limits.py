"""The venue's request limits, per endpoint group, for a `CcxtSpotBroker` account.

ccxt throttles every request of a client through one bucket (Bybit: ``rateLimit`` 20 ms
times a cost per endpoint: 2.5 for an order create, 5 for a tickers or an order read), so
an order send waits behind the price and order polls that went before it, although the
venue counts them separately. Where the venue's limits per endpoint are known
(`LIMITS`), ccxt's own limiter is switched off and `Limiter` takes its place: one
rolling one-second window per endpoint group (`Bucket`), so a send waits only for the
sends before it.

A rate-limit answer (HTTP 429, Bybit retCode 10006: ccxt's ``RateLimitExceeded``) blocks
that group until the venue's ``X-Bapi-Limit-Reset-Timestamp`` (ms), or for
``BACKOFF_S`` when the answer does not carry it; the error still reaches the caller (an
order send's outcome is unknown then, and is looked up).

`Limiter` also counts the connection's errors: ``drop_after`` requests in a row failing
with a network error (a timeout, a dropped line, a 5xx -- not a rate limit, which is an
answer) call `on_drop` once; the next answer resets the count.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: how long a group waits after a rate-limit answer that does not say until when
BACKOFF_S = 1.0

#: venue -> endpoint path (ccxt's, without the leading slash) -> (group, requests per s).
#: Bybit v5, per UID and endpoint, a rolling one-second window, default (non-VIP) spot
#: account: order create 20/s, cancel 20/s, order realtime / history 50/s, execution
#: list 50/s, wallet balance 50/s; public market data only by IP (600 per 5 s window,
#: 120/s). Source: https://bybit-exchange.github.io/docs/v5/rate-limit ("API Rate Limit
#: Table", and "IP Limit"). Paths not listed share the ``other`` group at the lowest rate.
LIMITS: dict[str, dict[str, tuple[str, float]]] = {
    "bybit": {
        "v5/order/create": ("order/create", 20.0),
        "v5/order/cancel": ("order/cancel", 20.0),
        "v5/order/realtime": ("order/realtime", 50.0),
        "v5/order/history": ("order/history", 50.0),
        "v5/execution/list": ("execution/list", 50.0),
        "v5/account/wallet-balance": ("account/wallet-balance", 50.0),
        "v5/market/tickers": ("market", 120.0),
        "v5/market/instruments-info": ("market", 120.0),
        "v5/market/time": ("market", 120.0),
    },
}
OTHER_RATE = 10.0


class Bucket:
    """At most `rate` requests in any rolling second, as Bybit counts them (a token
    bucket refilled at `rate` a second would let twice that through in one second after
    an idle one)."""

    def __init__(self, rate: float):
        self.rate = rate
        self.limit = max(1, int(rate))
        self.sent: collections.deque = collections.deque()  # monotonic times, last second
        self.blocked_until = 0.0  # monotonic: after a rate-limit answer

    def wait_s(self, now: float) -> float:
        """How long until one more request fits (0: now)."""
        sent = self.sent
        while sent and sent[0] <= now - 1.0:
            sent.popleft()
        if now < self.blocked_until:
            return self.blocked_until - now
        return 0.0 if len(sent) < self.limit else sent[0] + 1.0 - now

    def take(self, now: float) -> None:
        self.sent.append(now)


@dataclass
class DropCounter:
    drop_after: int
    on_drop: Callable[[str], None]
    failures: int = 0
    reported: bool = False

    def ok(self) -> None:
        self.failures = 0
        self.reported = False

    def failed(self, exc: Exception) -> None:
        self.failures += 1
        if self.failures >= self.drop_after and not self.reported:
            self.reported = True
            self.on_drop(f"{self.failures} venue requests in a row failed; the last: "
                         f"{type(exc).__name__}: {str(exc)[:200]}")


class Limiter:
    """Wraps a ccxt client's ``fetch2`` (every REST request of it goes through there)."""

    def __init__(self, exchange: str, drops: DropCounter | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.groups = LIMITS.get(exchange)
        self.buckets: dict[str, Bucket] = {}
        self.drops = drops
        self._sleep = sleep
        #: called while a request waits for its bucket (the worker runs the order sends
        #: waiting then, when the request is a poll's)
        self.on_wait: Callable[[], None] | None = None
        self._lock = threading.Lock()
        #: naps taken waiting for a bucket, and how long in all (for inspection)
        self.waits = 0
        self.waited_s = 0.0

    @property
    def per_endpoint(self) -> bool:
        return self.groups is not None

    def install(self, client) -> None:
        """Route the client's requests through this limiter; with per-endpoint limits
        ccxt's single bucket is switched off."""
        if self.per_endpoint:
            client.enableRateLimit = False
        fetch2 = client.fetch2

        def limited(path, api=None, method="GET", params=None, config=None):
            return self.request(client, fetch2, path, api, method, params, config)

        client.fetch2 = limited

    def bucket(self, path: str) -> Bucket:
        group, rate = (self.groups or {}).get(path, ("other", OTHER_RATE))
        b = self.buckets.get(group)
        if b is None:
            b = self.buckets[group] = Bucket(rate)
        return b

    def request(self, client, fetch2, path, api, method, params, config):
        import ccxt

        b = self.bucket(path) if self.per_endpoint else None
        if b is not None:
            while True:
                with self._lock:
                    now = time.monotonic()
                    wait = b.wait_s(now)
                    if wait <= 0:
                        b.take(now)
                        break
                self.waits += 1
                if self.on_wait is not None:  # in short naps, sends going out between
                    self.on_wait()
                    with self._lock:
                        wait = b.wait_s(time.monotonic())
                    wait = min(wait, 0.005)
                if wait > 0:
                    self.waited_s += wait
                    self._sleep(wait)
        try:
            answer = fetch2(path, api if api is not None else ["public"], method,
                            params if params is not None else {},
                            config if config is not None else {})
        except ccxt.RateLimitExceeded:
            if b is not None:
                b.blocked_until = time.monotonic() + _reset_in_s(client)
            if self.drops is not None:
                self.drops.ok()  # the venue answered
            raise
        except ccxt.NetworkError as exc:  # timeouts, drops, 5xx
            if self.drops is not None:
                self.drops.failed(exc)
            raise
        if self.drops is not None:
            self.drops.ok()
        return answer


def _reset_in_s(client) -> float:
    """Seconds until the venue resets the limit it answered with, by its
    ``X-Bapi-Limit-Reset-Timestamp`` header (ms), or `BACKOFF_S`."""
    headers = getattr(client, "last_response_headers", None) or {}
    raw = None
    for k, v in dict(headers).items():
        if str(k).lower() == "x-bapi-limit-reset-timestamp":
            raw = v
    try:
        reset_ms = int(str(raw))
    except (TypeError, ValueError):
        return BACKOFF_S
    wait = reset_ms / 1000 - time.time()
    return min(max(wait, 0.0), 60.0)
