"""`PaperVenueBroker`: the paper broker priced by a venue's public market data (a dry run).

    [brokers.accounts.dry]
    symbols = { BTCUSDT = "BTC/USDT" }
    settings = { market_data = "bybit" }

A paper account (``capflow.brokers.paper:PaperBroker``, the default adapter) whose settings
name ``market_data`` -- a ccxt exchange id -- is served by this class: its orders and
positions are the paper broker's, simulated in capflow with its fill rules
(`capflow.brokers.paper`), but the ticks they fill on are the venue's, and its entries obey
the venue's instrument rules, exactly as a live account's would:

- **Prices.** The venue's tickers of the account's symbols (its ``symbols`` table, and
  those its orders and positions use) are fetched every ``price_interval_s`` by the live
  adapter's `PriceFeed`, on a worker thread of the account's own (never the account
  manager's), with ccxt's public API only: no key is read and no signed request is made.
  They are published as the live adapter's are (`VenueTicks`): capflow prices those
  symbols by them and the simulator does not simulate them. Each answer is one paper tick
  (bid, ask, last; the sizes shown at the best bid and ask are its liquidity), so a
  MARKET BUY fills at the venue's ask and a SELL at its bid (plus ``slippage_bps``), a
  LIMIT when the venue's ask / bid crosses it, and a take-profit / stop-loss when the
  venue's bid (a long) crosses its level. Simulator ticks are not used by this account.
- **Rules.** The venue's spot instruments (lot step, price tick, minimum quantity and
  notional) are loaded at connect and become the account's `venue_rules`: the entry flow
  rounds and checks entries by them before it reserves (``VENUE_MIN_QTY``,
  ``VENUE_MIN_NOTIONAL``, ``VENUE_NO_SHORT`` ...), as it does for a live account.
- **Stale prices.** No answer for ``stale_after_s``: entries are refused
  (``STALE_PRICES``) and a ``prices_stale`` alert names the positions whose take-profit /
  stop-loss cannot be watched meanwhile; the first answer after that clears it.
- **An unreachable venue** never stops the account or the server: connecting (loading
  the venue's instruments) is retried with the account's ``connect`` backoff, without
  giving up (``connect.max_attempts`` does not apply); meanwhile the account is not
  connected and its entries are refused (``UNAVAILABLE``). A symbol the venue does not
  list stops the account at once, naming the ``symbols`` setting; an exchange id ccxt does
  not know, or a setting this adapter does not take, stops start-up (naming it).
"""

from __future__ import annotations

import sys
from decimal import Decimal
from typing import Any

import msgspec
from ccxt.base.decimal_to_precision import TICK_SIZE

from capflow.actors.model.money import parse_decimal
from capflow.actors.model.settings import ConfigError
from capflow.actors.model.venue import VenueRules
from capflow.brokers.base import PENDING, PermanentConnectError
from capflow.brokers.ccxt_markets import venue_rules
from capflow.brokers.ccxt_prices import PriceFeed
from capflow.brokers.ccxt_settings import check_seconds, dialect
from capflow.brokers.ccxt_worker import VenueWorker
from capflow.brokers.events import PricesStale, VenueTicks
from capflow.brokers.paper import PAPER_SETTINGS, PaperBroker


class MarketData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where a paper account's prices come from."""

    #: a ccxt exchange id ("bybit")
    market_data: str
    #: one URL that replaces every entry of ccxt's ``urls["api"]`` (an emulator, a proxy)
    market_data_url: str | None = None
    #: the venue's test network's market data (ccxt's sandbox mode)
    market_data_sandbox: bool = False
    timeout_s: float = 10.0
    #: the venue's tickers are fetched this often
    price_interval_s: float = 1.0
    #: no prices for this long: entries are refused (STALE_PRICES)
    stale_after_s: float = 10.0


_OWN = frozenset(MarketData.__struct_fields__)
#: a tick's liquidity when the venue shows no size at its best bid and ask
_UNSHOWN = Decimal("Infinity")


def parse_market_data(account_id: str, settings: dict[str, Any]) -> MarketData:
    """The market-data settings of a paper account; `ConfigError` naming the setting."""
    where = f"[brokers.accounts.{account_id}.settings]"
    unknown = sorted(set(settings) - _OWN - PAPER_SETTINGS)
    if unknown:
        raise ConfigError(f"{where} {', '.join(unknown)}: not a setting of a paper account on "
                          f"market data (it takes {', '.join(sorted(_OWN | PAPER_SETTINGS))};"
                          " it needs no key)")
    try:
        md = msgspec.convert({k: v for k, v in settings.items() if k in _OWN}, MarketData,
                             strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    import ccxt  # a heavy import: only accounts that use it pay for it

    if md.market_data not in ccxt.exchanges:
        raise ConfigError(f"{where} market_data = {md.market_data!r}: ccxt knows no such "
                          "exchange (ccxt.exchanges lists them)")
    if md.market_data_sandbox and not getattr(ccxt, md.market_data)().urls.get("test"):
        raise ConfigError(f"{where} market_data_sandbox: ccxt has no test network for "
                          f"{md.market_data!r}")
    check_seconds(where, md, ("timeout_s", "price_interval_s", "stale_after_s"))
    for name in PAPER_SETTINGS & set(settings):
        if name != "fail_connects":
            try:
                parse_decimal(settings[name], name, allow_zero=True)
            except Exception:
                raise ConfigError(f"{where} {name} = {settings[name]!r}: not a number "
                                  ">= 0") from None
    return md


class PaperVenueBroker(PaperBroker):
    """The paper broker on a venue's public tickers and instrument rules (see above)."""

    venue_prices = True  # its symbols are priced by the venue's tickers

    @classmethod
    def check_config(cls, account_id, config) -> None:
        parse_market_data(account_id, dict(config.settings))

    def init(self) -> None:
        super().init()
        self.md = parse_market_data(self.account_id, dict(self.config.settings))
        self.client = None
        self.venue_rules = VenueRules()
        self.feed = PriceFeed(self, self.md.price_interval_s, self.md.stale_after_s)
        self.prices = self.feed.watch
        # the venue away costs stale prices, never the account: retry it without end
        self.connection.cfg = msgspec.structs.replace(self.connection.cfg,
                                                      max_attempts=sys.maxsize)
        # until connected, the worker wakes the manager every interval: its connection
        # backoff runs in step(), which no simulator tick may come to call
        self.worker = VenueWorker(f"prices-{self.account_id}", self.md.price_interval_s,
                                  self.feed.poll, lambda: self.wake(),
                                  idle=lambda: self.worker.wake())

    # -- connection: the venue's instruments, on the worker --------------------------------

    def start(self) -> None:
        self.worker.start()
        super().start()

    def connect(self):
        super().connect()  # the paper broker's rehearsed failures (fail_connects)
        self.worker.call(self._connect_on_worker)
        return PENDING

    def _connect_on_worker(self) -> None:
        try:
            rules = self._open()
        except Exception as exc:
            self.worker.post(("connect_failed", exc))
            return
        self.worker.polling = True
        self.worker.post(("connected", rules))

    def _open(self) -> VenueRules:
        import ccxt

        md = self.md
        if self.client is None:
            # no apiKey, no secret: ccxt refuses any private call before it is sent
            client = getattr(ccxt, md.market_data)({
                "timeout": int(md.timeout_s * 1000), "enableRateLimit": True,
                "options": dict(dialect(md.market_data).options)})
            if md.market_data_sandbox:
                client.set_sandbox_mode(True)
            if md.market_data_url:
                api = client.urls.get("api")
                client.urls["api"] = ({k: md.market_data_url for k in api}
                                      if isinstance(api, dict) else md.market_data_url)
            self.client = client
        try:
            markets = self.client.load_markets(reload=True)
        except (ccxt.AuthenticationError, ccxt.NotSupported) as exc:  # no retry mends it
            raise PermanentConnectError(
                f"[brokers.accounts.{self.account_id}.settings] market_data = "
                f"{md.market_data!r}: its markets cannot be read without a key "
                f"({type(exc).__name__})") from None
        rules, missing = venue_rules(self.config.symbols, self.money_places,
                                     self.client.precisionMode != TICK_SIZE, markets)
        if missing:
            raise PermanentConnectError(
                f"[brokers.accounts.{self.account_id}] symbols: {md.market_data} lists no "
                f"active spot market {sorted(missing)}")
        return rules

    def shutdown(self) -> None:
        self.worker.stop()
        super().shutdown()

    # -- what the worker reports, on the account manager's thread --------------------------

    def step(self) -> None:
        for kind, *args in self.worker.drain():
            if kind == "connected":
                self.venue_rules = args[0]
                self.connection.succeeded()
                self._price_symbols()
                self.worker.call(self.feed.poll, True)
            elif kind == "connect_failed":
                self.connection.failed(args[0])
            elif kind == "ticks":
                self.emit(VenueTicks(account_id=self.account_id, ts=self.clock.now(),
                                     ticks=args[0]))
                for tick in args[0]:
                    if tick.liquidity <= 0:  # the venue showed no sizes: not a limit
                        tick = msgspec.structs.replace(tick, liquidity=_UNSHOWN)
                    PaperBroker.on_tick(self, tick)
            elif kind == "prices_stale":
                unwatched = sorted(pid for armed in self._armed.values() for pid in armed)
                self.emit(PricesStale(account_id=self.account_id, ts=self.clock.now(),
                                      stale=args[0], age_s=args[1],
                                      unwatched=unwatched if args[0] else []))
        super().step()

    def on_tick(self, tick) -> None:
        """A simulator tick: not this account's market (its ticks are the venue's)."""

    def subscribe(self, symbol: str) -> None:
        super().subscribe(symbol)
        self._price_symbols()

    def _price_symbols(self) -> None:
        """What the feed prices: the symbols of the account's table, of its orders and of
        its positions, that the venue lists (known once connected)."""
        if not self.venue_rules.loaded:
            return
        rules = self.venue_rules.rules
        wanted = (set(self.config.symbols) | self.subscriptions
                  | {p.symbol for p in self.positions.values()})
        symbols = {s: rules[s].venue_symbol for s in wanted if s in rules}
        if symbols != self.feed.symbols:
            self.feed.symbols = symbols  # replaced whole: the worker reads it
