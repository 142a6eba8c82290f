"""The per-endpoint request limits of the ccxt adapter (`brokers.ccxt_limits`): Bybit
counts requests per endpoint in a rolling second, so no second may hold more than the
limit, whatever came before it."""

from __future__ import annotations

from capflow.brokers.ccxt_limits import LIMITS, Bucket


def _sent_as_fast_as_allowed(bucket: Bucket, start: float, seconds: float) -> list[float]:
    sent, now = [], start
    while now < start + seconds:
        if bucket.wait_s(now) <= 0:
            bucket.take(now)
            sent.append(now)
        now = round(now + 0.001, 6)
    return sent


def test_no_rolling_second_holds_more_than_the_limit_even_after_an_idle_one():
    bucket = Bucket(20)
    sent = _sent_as_fast_as_allowed(bucket, 100.0, 3.0)  # idle before: a full second
    worst = max(sum(1 for t in sent if a <= t < a + 1.0) for a in sent)
    assert worst == 20
    assert len(sent) >= 58  # and the limit is used: 20 a second


def test_a_rate_limit_answer_blocks_the_group_until_the_reset():
    bucket = Bucket(20)
    bucket.blocked_until = 5.0
    assert bucket.wait_s(4.0) == 1.0
    assert bucket.wait_s(5.0) == 0.0


def test_bybit_order_sends_and_polls_are_counted_apart():
    bybit = LIMITS["bybit"]
    groups = {bybit[p][0] for p in ("v5/order/create", "v5/order/realtime",
                                    "v5/execution/list", "v5/market/tickers")}
    assert len(groups) == 4
    assert bybit["v5/order/create"][1] == 20.0  # Bybit's spot default, per UID
