"""`CcxtSpotBroker`: a live spot account at a venue ccxt speaks to (Bybit v5 first).

    [brokers.accounts.bybit]
    adapter = "capflow.brokers.ccxt_venue:CcxtSpotBroker"
    settings = { exchange = "bybit", api_key_env = "BYBIT_KEY", api_secret_env = "BYBIT_SECRET" }

(every setting: `capflow.brokers.ccxt_settings`). The venue is the authority: what it
reports -- a fill, a fee, a cancel -- is booked; capflow's own decisions are taken before
an order is sent.

- **Threads.** All venue I/O runs on the adapter's worker thread (`ccxt_engine`); the
  account manager's thread only hands it work and drains what it reports, in `step()`,
  which the worker asks for (`wake`). `connect()` only starts connecting (`PENDING`).
- **Connecting** reads the credentials, loads the venue's spot instruments, resolves the
  account's symbols and reads the balance. A missing or rejected key, or a symbol the
  venue does not list, stops this account (`Disconnected`, naming the setting); the
  server goes on serving the others. The instruments' steps and minimums become the
  account's `venue_rules`, which the entry flow applies before it reserves.
- **Entries.** A MARKET entry goes out as a limit, immediate-or-cancel, at the price its
  capital was reserved for (`max_price`), so the venue cannot fill it above what the
  ledger holds; a LIMIT entry as a limit (good till canceled). SELL entries never reach
  it on spot (the entry flow refuses them: ``VENUE_NO_SHORT``).
- **Exits** sell the position's quantity rounded down to the lot step, at market, with
  a fixed client id per position and attempt. Bybit spot (and the other spot venues
  here) has no reduce-only order; the fixed id is what keeps a restart from selling
  twice. What is left below the lot step is dust: it is booked out of the position at
  the exit's price (the coins stay at the venue) and kept in `dust`.
- **Fees** are booked as the venue charged them: a spot buy whose fee is taken in the
  coin bought leaves the position that much short (`fee_qty`); a fee in a third coin
  is recorded in that coin and valued at the venue's price (`ccxt_books`).
- **Restart** (`restore`) looks every recorded order up by its client id and follows it;
  it sends again only an order that had no fill booked and that the venue does not know.
- **Prices** of the account's symbols come from the venue (`ccxt_prices.PriceFeed`,
  every ``price_interval_s``) and are published into capflow (`VenueTicks`); when they
  stop arriving for ``stale_after_s`` the adapter says so once (`PricesStale`): entries
  are refused (``STALE_PRICES``), exits are not.
- **Take-profit and stop-loss** are watched here on the venue's ticks (Bybit spot's
  conditional orders are not used: `ccxt_prices` says why): a tick that crosses a
  level sends the position's exit, once, with its fixed client id and the reason
  ``tp`` / ``sl``. While prices are stale they are not watched.
- **Reconciliation** (`ccxt_reconcile`): at connect (once the manager restored what
  capflow holds), every ``reconcile_every_s`` and when asked, the venue's balances,
  open orders and fills are compared with capflow's positions and stored fills; fills
  capflow missed are booked once, differences reported (`brokers.reconcile`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from decimal import Decimal

import msgspec
from ccxt.base.decimal_to_precision import TICK_SIZE
from loguru import logger

from capflow.actors.model.money import ZERO, parse_decimal, round_down, round_up
from capflow.actors.model.venue import VenueRules, qty_down
from capflow.brokers import ccxt_link as link
from capflow.brokers.base import PENDING, BrokerAdapter, PermanentConnectError
from capflow.brokers.ccxt_books import book_dust, load_stored, note_fee_coin
from capflow.brokers.ccxt_engine import UNPARSED, Engine, Live, amount, dec
from capflow.brokers.ccxt_markets import venue_rules
from capflow.brokers.ccxt_prices import PriceFeed, crossed
from capflow.brokers.ccxt_reconcile import compare, take_cut
from capflow.brokers.ccxt_settings import (
    credential_settings,
    dialect,
    entry_client_id,
    exit_client_id,
    parse_settings,
    read_credentials,
)
from capflow.brokers.ccxt_worker import VenueWorker
from capflow.brokers.events import (
    AccountInfo,
    BrokerEvent,
    BrokerOrder,
    BrokerPosition,
    EntryFilled,
    OrderCanceled,
    OrderRejected,
    PositionExited,
    PricesStale,
    VenueTicks,
)
from capflow.brokers.reconcile import BookedRows, Reconciled


class CcxtSpotBroker(BrokerAdapter):
    live = True  # its orders reach a real venue (a testnet's too)
    venue_prices = True  # its symbols are priced by the venue's tickers

    @classmethod
    def check_config(cls, account_id, config) -> None:
        parse_settings(account_id, dict(config.settings))

    def init(self) -> None:
        self.settings = parse_settings(self.account_id, dict(self.config.settings))
        self.dialect = dialect(self.settings.exchange)
        self.taker_fee = parse_decimal(self.settings.taker_fee, "taker_fee", allow_zero=True)
        self.client = None
        self.limiter = None  # the client's (`ccxt_limits`), made with it
        self.venue_rules = VenueRules()
        self.positions: dict[str, BrokerPosition] = {}
        #: capflow symbol -> ccxt symbol, once the venue's markets are loaded
        self.venue_symbols: dict[str, str] = {}
        #: orders sent and not ended, as far as this thread knows: order id -> order
        self.orders: dict[str, BrokerOrder] = {}
        #: exits sent per position (the next exit's client id takes the next number)
        self.exits: dict[str, int] = {}
        self.exit_orders: dict[str, str] = {}  # position id -> its working exit order id
        #: base coin -> quantity below the lot step left after exits (held at the venue;
        #: read back from the stored fills at the first connect: `ccxt_books`)
        self.dust: dict[str, Decimal] = {}
        self.dust_loaded = False
        self.fee_coins: dict[str, Decimal] = {}  # coin -> fees paid in it (`ccxt_books`)
        self.balance: dict | None = None
        #: coin -> (total, free, locked) at the venue, and when the venue last answered
        self.coins: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
        self.answered_at = None
        #: capflow's stored rows (set by the account manager), the fills reported in
        #: this run (booked, or on their way), the last reconciliation's report
        self.rows: BookedRows | None = None
        self.reported_fills: dict[str, None] = {}
        self.last_reconcile: Reconciled | None = None
        self._next_reconcile = 0.0  # monotonic; the worker's
        #: the worker's: reconcile only once the account manager restored what capflow
        #: holds (its first `reconcile` says so)
        self._ready = False
        self._asked = 0  # reconcile() requests so far (the manager's thread)
        self.engine = Engine(self)
        self.feed = PriceFeed(self, self.settings.price_interval_s,
                              self.settings.stale_after_s)
        self.prices, self.latency = self.feed.watch, self.engine.latency
        self._next_order_poll = 0.0
        #: positions whose take-profit / stop-loss exit the venue refused: not sent again
        #: on every tick (a close asked for by hand still is)
        self.stops_refused: set[str] = set()
        self.worker = VenueWorker(f"venue-{self.account_id}",
                                  min(self.settings.poll_interval_s,
                                      self.settings.price_interval_s),
                                  self._poll, lambda: self.wake(),
                                  lambda: link.idle(self))

    def _poll(self) -> None:
        """On the worker: the prices and the orders, each when due."""
        self.feed.poll()
        self.worker.sends_first()
        now = time.monotonic()
        if now >= self._next_order_poll:
            self._next_order_poll = now + self.settings.poll_interval_s
            self.engine.poll()

    # -- connection (the work is the worker's) -----------------------------------------

    def start(self) -> None:
        self.worker.start()
        super().start()

    def connect(self):
        self.worker.call(self._connect_on_worker)
        return PENDING

    def _connect_on_worker(self) -> None:
        try:
            rules = self._open()
        except Exception as exc:
            self.worker.post(("connect_failed", exc))
            return
        self.worker.post(("connected", rules))
        link.connected(self)

    def _open(self) -> VenueRules:
        import ccxt

        s = self.settings
        where = f"[brokers.accounts.{self.account_id}.settings]"
        try:
            creds = read_credentials(self.account_id, s)
        except ValueError as exc:
            raise PermanentConnectError(str(exc)) from None
        if self.client is None:
            self.client = link.make_client(self, creds)
        try:
            markets = self.client.load_markets(reload=True)
            rules, missing = venue_rules(self.config.symbols, self.money_places,
                                         self.client.precisionMode != TICK_SIZE, markets)
            if missing:
                raise PermanentConnectError(
                    f"[brokers.accounts.{self.account_id}] symbols: the venue lists no "
                    f"active spot market {sorted(missing)}")
            self._read_balance()
        except ccxt.AuthenticationError as exc:
            raise PermanentConnectError(f"{where} {credential_settings(s)}: the venue "
                                        f"rejected the key ({type(exc).__name__})") from None
        return rules

    def poll_balance(self) -> None:
        """On the worker: the account's balance, for `account_info`."""
        import ccxt

        try:
            self._read_balance()
        except ccxt.NetworkError as exc:
            logger.warning("reading the balance of {} failed: {}", self.account_id, exc)
        except ccxt.AuthenticationError as exc:  # the key was revoked or expired meanwhile
            link.dropped(self, f"the venue refused the key: {str(exc)[:200]}")
        except (ccxt.BaseError, *UNPARSED) as exc:  # the rest of the poll goes on
            logger.warning("reading the balance of {} failed (the last one is kept): {}: "
                           "{}", self.account_id, type(exc).__name__, str(exc)[:200])

    def _read_balance(self) -> None:
        b = self.client.fetch_balance()
        cur = self.config.currency
        coins = {c: (amount(t), amount((b.get("free") or {}).get(c)),
                     amount((b.get("used") or {}).get(c)))
                 for c, t in (b.get("total") or {}).items() if t}
        self.worker.post(("balance", {"total": dec(b.get("total", {}).get(cur)),
                                      "free": dec(b.get("free", {}).get(cur)),
                                      "coins": coins}))

    # -- reconciliation (brokers.ccxt_reconcile) -------------------------------------------

    def reconcile_if_due(self) -> None:
        """On the worker, after a poll: reconcile every ``reconcile_every_s`` (and at the
        first poll after a connect)."""
        every = self.settings.reconcile_every_s
        now = time.monotonic()
        first = self._next_reconcile == 0.0
        if self._ready and now >= self._next_reconcile and (every > 0 or first):
            self._next_reconcile = now + (every if every > 0 else float("inf"))
            take_cut(self)

    def reconcile(self) -> int:
        """Reconcile now, or at connect when not connected yet (the report comes as a
        `Reconciled` event, whose `asked` is the number this returns)."""
        self._asked += 1
        self.worker.call(self._reconcile_now, self._asked)
        return self._asked

    def _reconcile_now(self, asked: int = 0) -> None:
        self._ready = True
        if self.worker.polling:
            every = self.settings.reconcile_every_s
            self._next_reconcile = time.monotonic() + (every if every > 0 else float("inf"))
            take_cut(self, asked)

    def known_client_ids(self) -> set[str]:
        """The client ids of the orders this thread knows are working."""
        ids = {entry_client_id(oid) for oid in self.orders}
        for pid, oid in self.exit_orders.items():
            n = oid.rsplit(":x", 1)[-1]
            if n.isdigit():
                ids.add(exit_client_id(pid, int(n)))
        return ids

    def emit_fill(self, e: BrokerEvent) -> None:
        """Report a venue fill, once: a reconcile and the order's own polls may both
        find it."""
        if e.fill_id in self.reported_fills:
            logger.info("fill {} was reported already: not again", e.fill_id)
            return
        self.reported_fills[e.fill_id] = None
        note_fee_coin(self, e)
        if len(self.reported_fills) > 100_000:  # long committed: the fills table has them
            del self.reported_fills[next(iter(self.reported_fills))]
        self.emit(e)

    def venue_status(self) -> dict:
        """What `account.get` shows of the venue."""
        return {"balances": {c: {"total": t, "free": f, "locked": u}
                             for c, (t, f, u) in sorted(self.coins.items())},
                "answered_at": self.answered_at}

    def shutdown(self) -> None:
        self.worker.stop()
        super().shutdown()

    # -- what the worker reports, on the account manager's thread ------------------------

    def step(self) -> None:
        for item in self.worker.drain():
            if isinstance(item, BrokerEvent):
                self._report(item)
            else:
                self._note(item)
        super().step()

    def _note(self, item: tuple) -> None:
        kind = item[0]
        if kind == "connected":
            self.venue_rules = item[1]
            self.venue_symbols = {sym: r.venue_symbol for sym, r in item[1].rules.items()}
            self.connection.succeeded()
            load_stored(self)
            self._price_symbols()
            self.worker.call(self.feed.poll, True)
        elif kind == "ticks":
            self.emit(VenueTicks(account_id=self.account_id, ts=self.clock.now(),
                                 ticks=item[1]))
            self._watch_stops(item[1])
        elif kind == "prices_stale":
            unwatched = sorted(p.position_id for p in self.positions.values()
                               if p.tp_price is not None or p.sl_price is not None)
            self.emit(PricesStale(account_id=self.account_id, ts=self.clock.now(),
                                  stale=item[1], age_s=item[2],
                                  unwatched=unwatched if item[1] else []))
        elif kind == "lost":
            link.lost(self, item[1])
        elif kind == "connect_failed":
            self.connection.failed(item[1])
        elif kind == "balance":
            self.balance = item[1]
            self.coins = item[1]["coins"]
            self.answered_at = self.clock.now()
        elif kind == "cut":
            report = compare(self, *item[1:])
            if item[1] is not None:
                self.answered_at = self.clock.now()
                self.coins = item[1].balances
                self.last_reconcile = report
            self.emit(report)
        elif kind == "unbookable":  # a fill that makes no sense: not folded in
            self.emit_fill(item[1])
        elif kind == "exit_ended":
            if self.exit_orders.get(item[1]) == item[2]:
                del self.exit_orders[item[1]]
            self.orders.pop(item[2], None)
        elif kind == "exit_failed":
            self.exit_orders.pop(item[1], None)
            self.stops_refused.add(item[1])  # no automatic exit again: a person looks
            logger.error("exit of position {} refused by the venue: {}", item[1], item[2])

    def _report(self, e: BrokerEvent) -> None:
        if isinstance(e, EntryFilled | PositionExited) and e.fill_id in self.reported_fills:
            logger.info("fill {} was reported already (a reconcile booked it)", e.fill_id)
            return
        if isinstance(e, EntryFilled):
            self._opened(e)
            self.emit_fill(e)
        elif isinstance(e, PositionExited):
            self.emit_fill(e)
            self._reduced(e)
        else:
            if isinstance(e, OrderCanceled | OrderRejected):
                self.orders.pop(e.order_id, None)
            self.emit(e)

    def _opened(self, e: EntryFilled) -> None:
        o = self.orders.get(e.order_id)
        held = e.qty - e.fee_qty
        p = self.positions.get(e.position_id)
        if p is None and o is not None:
            self.positions[e.position_id] = BrokerPosition(
                position_id=e.position_id, profile_id=e.profile_id, symbol=o.symbol,
                side=o.side, qty=held, entry_price=e.price, tp_price=o.tp_price,
                sl_price=o.sl_price, order_id=o.order_id)
        elif p is not None:
            self.positions[e.position_id] = msgspec.structs.replace(
                p, qty=p.qty + held,
                entry_price=(p.entry_price * p.qty + e.price * held) / (p.qty + held))
        if o is not None and o.qty <= o.filled_qty + e.qty:
            self.orders.pop(e.order_id, None)
        elif o is not None:
            self.orders[e.order_id] = msgspec.structs.replace(
                o, filled_qty=o.filled_qty + e.qty)

    def _reduced(self, e: PositionExited) -> None:
        p = self.positions.get(e.position_id)
        if p is None:
            return
        left = p.qty - e.qty
        if left <= 0:
            del self.positions[e.position_id]
            return
        p = msgspec.structs.replace(p, qty=left)
        self.positions[e.position_id] = p
        book_dust(self, p, e)  # what no exit can sell: dust

    # -- prices, take-profit and stop-loss ----------------------------------------------

    def subscribe(self, symbol: str) -> None:
        super().subscribe(symbol)
        self._price_symbols()

    def _price_symbols(self) -> None:
        """What the feed prices: the symbols of the account's table, of its orders and of
        its positions, that the venue lists (known once connected)."""
        rules = self.venue_rules.rules
        if not self.venue_rules.loaded:
            return
        wanted = (set(self.config.symbols) | self.subscriptions
                  | {p.symbol for p in self.positions.values()})
        symbols = {s: rules[s].venue_symbol for s in wanted if s in rules}
        if symbols != self.feed.symbols:
            self.feed.symbols = symbols  # replaced whole: the worker reads it

    def _watch_stops(self, ticks) -> None:
        latest = {t.symbol: t for t in ticks}
        for p in list(self.positions.values()):
            tick = latest.get(p.symbol)
            reason = None if tick is None else crossed(p, tick)
            if (reason is None or p.position_id in self.exit_orders
                    or p.position_id in self.stops_refused):
                continue
            logger.info("position {}: {} crossed at bid {} / ask {}: exiting",
                        p.position_id, reason, tick.bid, tick.ask)
            self.close_position(p.position_id, reason)

    # -- account ----------------------------------------------------------------------

    def account_info(self) -> AccountInfo:
        places = self.money_places
        b = self.balance or {"total": ZERO, "free": ZERO}
        held = sum((p.qty * p.entry_price for p in self.positions.values()), ZERO)
        return AccountInfo(currency=self.config.currency, cash=b["total"],
                           equity=round_down(b["total"] + held, places),
                           margin_used=round_up(held, places),
                           free_cash=round_down(b["free"], places))

    def portfolio(self) -> list[BrokerPosition]:
        return list(self.positions.values())

    # -- orders -----------------------------------------------------------------------

    def _live(self, o: BrokerOrder, skip: Decimal = ZERO) -> Live:
        market = o.type == "MARKET"
        price = o.max_price if market else o.price
        return Live(order_id=o.order_id, profile_id=o.profile_id, position_id=o.position_id,
                    symbol=o.symbol, venue_symbol=self._venue_symbol(o.symbol), side=o.side,
                    kind="entry", qty=o.qty, price=price, cid=entry_client_id(o.order_id),
                    ioc=market, tif=o.time_in_force, skip=skip)

    def _venue_symbol(self, symbol: str) -> str:
        return self.venue_symbols.get(symbol) or self.symbols.to_broker(symbol)

    def submit_order(self, order: BrokerOrder) -> None:
        self.orders[order.order_id] = order
        self.worker.send(self.engine.place, self._live(order))

    def cancel_order(self, order_id: str, reason: str = "canceled") -> bool:
        if order_id not in self.orders:
            return False
        self.worker.send(self.engine.cancel, order_id, reason)
        return True

    def close_position(self, position_id: str, reason: str = "manual", *,
                       skip: Decimal = ZERO, restoring: bool = False) -> bool:
        p = self.positions.get(position_id)
        if p is None:
            return False
        if position_id in self.exit_orders:  # one exit at a time: it is under way
            return True
        rule = self.venue_rules.rules.get(p.symbol)
        qty = qty_down(p.qty + skip, rule) if rule is not None else p.qty + skip
        n = self.exits.get(position_id, 0) + 1
        self.exits[position_id] = n
        order_id = f"{position_id}:x{n}"
        self.exit_orders[position_id] = order_id
        live = Live(order_id=order_id, profile_id=p.profile_id, position_id=position_id,
                    symbol=p.symbol, venue_symbol=self._venue_symbol(p.symbol),
                    side="SELL" if p.side == "BUY" else "BUY", kind="exit", qty=qty,
                    price=None, cid=exit_client_id(position_id, n), reason=reason,
                    skip=skip)
        (self.worker.call if restoring else self.worker.send)(
            self.engine.adopt if restoring else self.engine.place, live)
        return True

    def set_stops(self, position_id: str, tp_price: Decimal | None,
                  sl_price: Decimal | None) -> bool:
        p = self.positions.get(position_id)
        if p is None:
            return False
        self.positions[position_id] = msgspec.structs.replace(p, tp_price=tp_price,
                                                              sl_price=sl_price)
        return True

    def restore(self, orders: Iterable[BrokerOrder],
                positions: Iterable[BrokerPosition]) -> None:
        """Reconcile: look every recorded order up by its client id (never a blind
        resend); a close that was asked for is looked up as its first exit."""
        for p in positions:
            self.positions[p.position_id] = p
        for o in orders:
            self.orders[o.order_id] = o
            self.worker.call(self.engine.adopt, self._live(o, skip=o.filled_qty))
        for p in list(self.positions.values()):
            if p.closing is not None:
                self.close_position(p.position_id, p.closing, skip=p.exited_qty,
                                    restoring=True)
