"""The venue's prices for a `CcxtSpotBroker` account, and its take-profit / stop-loss.

**Prices.** `PriceFeed` runs on the adapter's worker thread: every ``price_interval_s``
it fetches the venue's tickers (ccxt ``fetch_tickers``; Bybit v5 ``GET
/v5/market/tickers?category=spot``) of the account's symbols -- those of its ``symbols``
table, and those its orders and positions subscribed -- and posts them as capflow
`Tick`s, which the adapter publishes (`VenueTicks`): capflow's valuation, breakers,
concentration limits and quotes then use the venue's bid / ask / last for them. An
answer that does not come (a timeout, a 5xx, a rate limit) leaves the prices as they
were; after ``stale_after_s`` without one they are stale (`PriceWatch`): the adapter
reports it once (`PricesStale`), entries on the account are refused with
``STALE_PRICES`` and exits are not; the first answer after that clears it.

**Take-profit and stop-loss.** Bybit v5 spot does have conditional orders
(``orderFilter=tpslOrder`` / ``StopOrder`` on ``/v5/order/create``, which ccxt's bybit
sends for ``triggerPrice``, ``stopLossPrice`` and ``takeProfitPrice`` on a spot
market), but spot has no reduce-only: a venue-side stop sized to a position could still
sell coins capflow no longer holds for it once the position was closed otherwise; and
the venue emulator the adapter is tested against does not emulate them. So they are
watched here, on the account manager's thread (`crossed`): when a venue tick
crosses a position's level (a long: bid at or below its stop-loss, or at or above its
take-profit), the adapter sends the position's exit once, with its fixed client id,
sized to the position and rounded down to the lot step. While prices are stale the
levels are not watched, and the `PricesStale` report names the positions concerned.
"""

from __future__ import annotations

import time
from decimal import Decimal

from loguru import logger

from capflow.actors.model.money import ZERO
from capflow.actors.model.prices import PriceWatch
from capflow.actors.model.ticks import Tick
from capflow.brokers.ccxt_engine import dec
from capflow.brokers.ccxt_sanity import number_problem
from capflow.brokers.events import BrokerPosition


class PriceFeed:
    """Fetches the tickers of the account's symbols; runs on the worker."""

    def __init__(self, broker, interval_s: float, stale_after_s: float):
        self.b = broker
        self.interval_s = interval_s
        self.watch = PriceWatch(stale_after_s)
        #: capflow symbol -> venue symbol to price; replaced whole (never changed in
        #: place) by the manager's thread, read by the worker
        self.symbols: dict[str, str] = {}
        self._next = 0.0
        self._seq: dict[str, int] = {}
        self._stale = False  # as last reported
        self._failing = False

    def poll(self, force: bool = False) -> None:
        now = time.monotonic()
        symbols = self.symbols
        self.watch.watching(bool(symbols))
        if symbols and (force or now >= self._next):
            self._next = now + self.interval_s
            self._fetch(symbols)
        stale = self.watch.stale()
        if stale != self._stale:
            self._stale = stale
            self.b.worker.post(("prices_stale", stale, self.watch.age_s()))

    def _fetch(self, symbols: dict[str, str]) -> None:
        by_venue = {v: s for s, v in symbols.items()}
        try:
            tickers = self.b.client.fetch_tickers(sorted(by_venue))
        except Exception as exc:  # no prices this time: they age
            if not self._failing:
                logger.warning("fetching the prices of {} failed ({}: {}); retrying every "
                               "{} s", self.b.account_id, type(exc).__name__,
                               str(exc)[:200], self.interval_s)
            self._failing = True
            return
        if self._failing:
            logger.info("prices of {} arrive again", self.b.account_id)
        self._failing = False
        ts = self.b.clock.now()
        ticks = []
        for venue_symbol, t in tickers.items():
            symbol = by_venue.get(venue_symbol)
            tick = None if symbol is None else self._tick(symbol, ts, t)
            if tick is not None:
                ticks.append(tick)
        if ticks:
            self.watch.fresh(ticks)
            self.b.worker.post(("ticks", ticks))

    def _tick(self, symbol: str, ts, t: dict) -> Tick | None:
        bid, ask, last = dec(t.get("bid")), dec(t.get("ask")), dec(t.get("last"))
        if (number_problem("bid", bid) or number_problem("ask", ask) or ask < bid
                or number_problem("last", last, zero=True)):
            return None  # no two-sided market (or numbers that are none): no price
        last = last or (bid + ask) / 2
        last = min(max(last, bid), ask)
        sizes = [dec(t.get(k)) for k in ("bidVolume", "askVolume") if t.get(k) is not None]
        sizes = [x for x in sizes if number_problem("size", x, zero=True) is None]
        seq = self._seq.get(symbol, 0) + 1
        self._seq[symbol] = seq
        return Tick(symbol, seq, ts, bid, ask, last, min(sizes) if sizes else ZERO)


def crossed(p: BrokerPosition, tick: Tick) -> str | None:
    """``tp`` or ``sl`` when `tick` crosses the position's level (its exit side's price:
    the bid for a long, the ask for a short), else None."""
    price: Decimal = tick.bid if p.side == "BUY" else tick.ask
    if p.side == "BUY":
        if p.sl_price is not None and price <= p.sl_price:
            return "sl"
        if p.tp_price is not None and price >= p.tp_price:
            return "tp"
    else:
        if p.sl_price is not None and price >= p.sl_price:
            return "sl"
        if p.tp_price is not None and price <= p.tp_price:
            return "tp"
    return None
