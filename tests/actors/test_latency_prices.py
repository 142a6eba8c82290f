"""The two things the metrics read that the venue worker writes: the order latency
histogram (`Latency`) and each symbol's price freshness (`PriceWatch.symbol_ages`)."""

from __future__ import annotations

from decimal import Decimal as D

from capflow.actors.model.latency import Latency
from capflow.actors.model.prices import PriceWatch
from capflow.actors.model.ticks import Tick


def test_latency_buckets_are_cumulative_and_their_bounds_inclusive():
    lat = Latency((0.01, 0.1))
    for s in (0.01, 0.05, 0.1, 3.0, -1.0):  # a clock step back counts as 0
        lat.observe(s)
    assert lat.buckets() == [(0.01, 2), (0.1, 4), (float("inf"), 5)]
    assert lat.count == 5 and abs(lat.sum - 3.16) < 1e-9


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def tick(symbol: str, bid: str) -> Tick:
    return Tick(symbol, 1, None, D(bid), D(bid) + 1, D(bid), D(0))


def test_symbol_ages_tell_an_answer_that_no_longer_moves_from_one_that_stopped():
    clock = Clock()
    watch = PriceWatch(5.0, clock)
    assert watch.symbol_ages() == {}
    watch.fresh([tick("BTCUSDT", "100"), tick("ETHUSDT", "10")])
    clock.now += 2
    watch.fresh([tick("BTCUSDT", "100")])  # the same price again; ETH not answered
    clock.now += 1
    assert watch.symbol_ages() == {"BTCUSDT": (1.0, 3.0), "ETHUSDT": (3.0, 3.0)}
    watch.fresh([tick("BTCUSDT", "101")])  # it moved
    assert watch.symbol_ages()["BTCUSDT"] == (0.0, 0.0)
