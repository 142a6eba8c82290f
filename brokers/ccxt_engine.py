"""The venue side of `CcxtSpotBroker`: its orders at the venue (`Engine`), run on the one
thread that owns the ccxt client and does all of the account's venue I/O
(`ccxt_worker.VenueWorker`), so the account manager's mailbox never waits on the venue.

The account manager's thread hands it work (`VenueWorker.call`); it answers by posting
events and notes to an outbox and waking the manager, which drains them on its own
thread (`CcxtSpotBroker.step`). Between calls it polls every ``poll_interval_s``; until
the account is connected it wakes the manager as often instead, so that a connection
waiting for its retry is retried when due even if nothing else reaches the manager.

Orders that cannot be doubled or lost:

- Every order carries its client order id (`ccxt_settings.entry_client_id` /
  `exit_client_id`), derived from capflow's id, which capflow recorded before the order
  reached the manager. A refusal the venue states (insufficient balance, a bad order) is
  an `OrderRejected`; anything else -- a timeout, a dropped line, a 5xx, a rate limit, an
  error ccxt cannot classify -- leaves the outcome unknown: the order is never reported
  rejected and its capital stays reserved. It is looked up by its client id on the next
  polls; found, it is followed; not found (which proves nothing: venues keep a bounded
  history), it is sent again with the same id, and a duplicate-id answer means it exists.
- Fills come from the venue's trades of each order (`ccxt_trades.order_trades`),
  deduplicated by trade id; an order that ended is reported ended only once its trades
  add up to what the venue says it filled, so a fill never arrives after its cancel from
  here (the ledger books one anyway, should it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal

from loguru import logger

from capflow.actors.model.latency import Latency
from capflow.actors.model.money import ZERO, round_up
from capflow.actors.model.order_types import FOK_UNFILLED, IOC_REMAINDER
from capflow.brokers.ccxt_sanity import beyond_problem, trade_problem
from capflow.brokers.ccxt_trades import order_trades
from capflow.brokers.events import (
    EntryFilled,
    FillUnbookable,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    PositionExited,
)

FINAL = ("closed", "canceled", "expired", "rejected")
#: the times in force sent to the venue as such, and why their rest ends
_TIF_END = {"IOC": IOC_REMAINDER, "FOK": FOK_UNFILLED}

#: what ccxt raises on a venue answer it cannot parse (a "NaN" fee: ValueError)
UNPARSED = (ValueError, TypeError, KeyError, ArithmeticError)


def dec(x) -> Decimal:
    """A number ccxt parsed (a float read from the venue's decimal string, or a string)
    as the Decimal the venue sent: a float's shortest repr is that string."""
    return Decimal(str(x)) if x is not None else ZERO


def amount(x) -> Decimal:
    """`dec`, without the trailing zeros of a float's repr (2.0 -> 2)."""
    d = dec(x)
    return d.quantize(Decimal(1)) if d == d.to_integral_value() else d.normalize()


@dataclass
class Live:
    """An order the engine follows at the venue."""

    order_id: str
    profile_id: str
    position_id: str
    symbol: str  # capflow's
    venue_symbol: str
    side: str  # BUY / SELL
    kind: str  # entry / exit
    qty: Decimal
    price: Decimal | None  # None: a market order
    cid: str
    ioc: bool = False
    #: the capflow order's time in force: IOC and FOK go to the venue as such (a MARKET
    #: entry is IOC anyway); GTC is the venue's default
    tif: str = "GTC"
    reason: str = "manual"  # an exit's
    venue_id: str | None = None
    #: SENDING (no answer yet), UNKNOWN (the answer was lost), OPEN, DONE
    state: str = "SENDING"
    lookups: int = 0
    accepted: bool = False
    seen: set = field(default_factory=set)
    #: the quantity of its trades booked before a restart: its first trades, skipped
    skip: Decimal = ZERO
    skipped: Decimal = ZERO
    booked: Decimal = ZERO
    #: a trade of it made no sense (`ccxt_sanity`): its trades cannot add up
    garbled: bool = False
    cancel_reason: str | None = None
    cancel_sent: bool = False
    #: monotonic time of its first send (None: not sent by this run, e.g. adopted)
    sent_at: float | None = None


def fee_of(trade: dict, base: str, quote: str, places: int) -> tuple[Decimal, Decimal, str]:
    """(fee in money, fee in the base coin, the currency it was charged in) of a trade;
    a fee in a third coin is neither (`third_coin` values it)."""
    fee = trade.get("fee") or {}
    cost = dec(fee.get("cost"))
    currency = fee.get("currency") or quote
    if cost <= 0:
        return ZERO, ZERO, currency
    if currency == base:
        return ZERO, cost, currency
    if currency == quote:
        return round_up(cost, places), ZERO, currency
    return ZERO, ZERO, currency  # a third coin (a fee token): not in the account's money


def third_coin(b, trade: dict, base: str, quote: str, fill_id: str) -> dict:
    """On the worker: a trade's fee charged in a third coin (a fee token), as the fields
    of its fill -- ``fee`` (its value in money, `ccxt_books.fee_value`), ``fee_coin``,
    ``fee_coin_qty`` -- or {} when it was charged in the base or the quote."""
    from capflow.brokers.ccxt_books import fee_value

    fee = trade.get("fee") or {}
    cost, coin = dec(fee.get("cost")), fee.get("currency")
    if cost <= 0 or not coin or coin in (base, quote):
        return {}
    return {"fee": fee_value(b, coin, cost, fill_id), "fee_coin": coin, "fee_coin_qty": cost}


class Engine:
    """The order book of one account at its venue; every method runs on the worker."""

    def __init__(self, broker):
        self.b = broker  # the adapter: settings, clock, ids, the client it built
        self.live: dict[str, Live] = {}
        #: send -> acknowledged, of the orders this run sent (read by the metrics)
        self.latency = Latency()

    # -- helpers ------------------------------------------------------------------------

    @property
    def client(self):
        return self.b.client

    def _post(self, item) -> None:
        self.b.worker.post(item)

    def _now(self):
        return self.b.clock.now()

    # -- sending ------------------------------------------------------------------------

    def place(self, live: Live) -> None:
        self.live[live.order_id] = live
        self._send(live)

    def _send(self, live: Live) -> None:
        import ccxt

        params = {"clientOrderId": live.cid}
        if live.tif in _TIF_END:
            params["timeInForce"] = live.tif
        elif live.ioc:
            params["timeInForce"] = "IOC"
        kind = "market" if live.price is None else "limit"
        live.state = "SENDING"
        if live.sent_at is None:
            live.sent_at = time.monotonic()
        try:
            o = self.client.create_order(live.venue_symbol, kind, live.side.lower(),
                                         str(live.qty), None if live.price is None
                                         else str(live.price), params)
        except ccxt.NetworkError as exc:  # timeouts, lost answers, 5xx, rate limits
            self._unknown(live, exc)
            return
        except ccxt.InvalidOrder as exc:
            if "duplicate" in str(exc).lower():  # the venue has it: follow it
                logger.warning("order {} ({}) exists at the venue already: following it",
                               live.order_id, live.cid)
                self._unknown(live, exc)
                self._lookup(live)
                return
            self._rejected(live, exc)
            return
        except (ccxt.InsufficientFunds, ccxt.BadSymbol, ccxt.PermissionDenied,
                ccxt.AuthenticationError) as exc:
            self._rejected(live, exc)
            return
        except Exception as exc:  # an error ccxt could not place: nothing is known
            self._unknown(live, exc)
            return
        self._opened(live, o)

    def _unknown(self, live: Live, exc: Exception) -> None:
        live.state = "UNKNOWN"
        live.lookups = 0
        logger.warning("order {} ({}): outcome unknown ({}: {}); looking it up by its "
                       "client id", live.order_id, live.cid, type(exc).__name__,
                       _short(exc))

    def _rejected(self, live: Live, exc: Exception) -> None:
        live.state = "DONE"
        del self.live[live.order_id]
        reason = f"the venue refused it: {type(exc).__name__}: {_short(exc)}"
        if live.kind == "entry":
            self._post(OrderRejected(account_id=self.b.account_id, ts=self._now(),
                                     order_id=live.order_id, profile_id=live.profile_id,
                                     reason=reason))
        else:
            self._post(("exit_failed", live.position_id, reason))

    def _opened(self, live: Live, o: dict) -> None:
        live.venue_id = str(o.get("id") or live.venue_id or "")
        live.state = "OPEN"
        if not live.accepted:
            live.accepted = True
            if live.sent_at is not None:
                self.latency.observe(time.monotonic() - live.sent_at)
            if live.kind == "entry":
                self._post(OrderAccepted(account_id=self.b.account_id, ts=self._now(),
                                         order_id=live.order_id,
                                         profile_id=live.profile_id))
        if live.cancel_reason is not None and not live.cancel_sent:
            self._cancel(live)

    # -- following ----------------------------------------------------------------------

    def _lookup(self, live: Live) -> None:
        """Find an order whose outcome is unknown by its client id; send it again (same
        id) after ``lookups_before_resend`` lookups found nothing."""
        import ccxt

        param = {self.b.dialect.client_id_param: live.cid}
        try:
            found = [o for o in self.client.fetch_open_orders(live.venue_symbol, None, None,
                                                              dict(param))
                     if o.get("clientOrderId") == live.cid]
            if not found:
                closed = (self.client.fetch_canceled_and_closed_orders
                          if self.client.has.get("fetchCanceledAndClosedOrders")
                          else self.client.fetch_closed_orders)
                found = [o for o in closed(live.venue_symbol, None, None, dict(param))
                         if o.get("clientOrderId") == live.cid]
        except ccxt.NetworkError as exc:
            logger.warning("looking up order {} failed: {}", live.order_id, _short(exc))
            return
        if found:
            self._opened(live, found[0])
            self._refresh(live, found[0])
            return
        live.lookups += 1
        if live.lookups >= self.b.settings.lookups_before_resend:
            logger.warning("order {} ({}) not found at the venue after {} lookups: sending "
                           "it again with the same client id", live.order_id, live.cid,
                           live.lookups)
            self._send(live)

    def _refresh(self, live: Live, o: dict | None = None) -> None:
        import ccxt

        try:
            if o is None:
                o = self.client.fetch_order(live.venue_id, live.venue_symbol,
                                            dict(self.b.dialect.fetch_order_params))
            filled = dec(o.get("filled"))
            status = o.get("status")
            if not filled.is_finite():
                logger.error("order {} ({}): the venue says it filled {}", live.order_id,
                             live.cid, filled)
                return
            if filled > live.skip + live.booked or status in FINAL:
                try:
                    trades = order_trades(self.client, self.b.dialect, live.venue_id,
                                          live.venue_symbol)
                except UNPARSED as exc:  # ccxt could not parse the venue's answer
                    trades = []
                    missing = filled - live.skip - live.booked
                    if missing > 0 and not live.garbled:  # one alert per order
                        self._garbled(live, f"{live.venue_id}:unread", f"filled {missing} "
                                      f"in trades that cannot be read ({type(exc).__name__}"
                                      f": {_short(exc)})")
                self._book_trades(live, trades)
        except ccxt.OrderNotFound:
            logger.warning("order {} ({}) is no longer found at the venue by its id",
                           live.order_id, live.cid)
            return
        except ccxt.NetworkError as exc:
            logger.warning("polling order {} failed: {}", live.order_id, _short(exc))
            return
        if status in FINAL and (live.garbled or live.skip + live.booked >= filled):
            self._ended(live, status, filled)  # a garbled trade never adds up

    def _book_trades(self, live: Live, trades: list[dict]) -> None:
        market = self.client.market(live.venue_symbol)
        base, quote = market["base"], market["quote"]
        places = self.b.money_places
        trades = sorted(trades, key=lambda t: (t.get("timestamp") or 0, str(t.get("id"))))
        for t in trades:
            tid = str(t["id"])
            if tid in live.seen:
                continue
            live.seen.add(tid)
            qty, price = dec(t["amount"]), dec(t["price"])
            raw_fee = dec((t.get("fee") or {}).get("cost"))
            problem = trade_problem(qty, price, raw_fee)
            if problem is None and live.skipped < live.skip:  # booked before a restart
                live.skipped += qty
                continue
            problem = problem or beyond_problem(live.skip + live.booked, qty, live.qty,
                                                price, live.side, live.price)
            if problem is not None:
                self._garbled(live, tid, problem)
                continue
            fee, fee_qty, _currency = fee_of(t, base, quote, places)
            live.booked += qty
            fill_id = f"{self.b.settings.exchange}:{tid}"
            third = third_coin(self.b, t, base, quote, fill_id)
            fee = third.pop("fee", fee)
            if live.kind == "entry":
                self._post(EntryFilled(
                    account_id=self.b.account_id, ts=self._now(), order_id=live.order_id,
                    profile_id=live.profile_id, position_id=live.position_id,
                    fill_id=fill_id, qty=qty, price=price, fee=fee, fee_qty=fee_qty,
                    liquidity="MAKER" if t.get("takerOrMaker") == "maker" else "TAKER",
                    **third))
            else:
                self._post(PositionExited(
                    account_id=self.b.account_id, ts=self._now(),
                    position_id=live.position_id, profile_id=live.profile_id,
                    fill_id=fill_id, qty=qty, price=price, fee=fee, reason=live.reason,
                    **third))

    def _garbled(self, live: Live, tid: str, problem: str) -> None:
        """A trade that makes no sense (`ccxt_sanity`): not booked nor counted, but
        reported; its order ends when the venue says so."""
        logger.error("trade {} of order {} ({}) cannot be booked: {}", tid, live.order_id,
                     live.cid, problem)
        live.garbled = True
        self._post(("unbookable", FillUnbookable(
            account_id=self.b.account_id, ts=self._now(), profile_id=live.profile_id,
            fill_id=f"{self.b.settings.exchange}:{tid}",
            reason=f"trade {tid} of order {live.order_id} ({live.cid}) {problem}")))

    def _ended(self, live: Live, status: str, filled: Decimal) -> None:
        live.state = "DONE"
        self.live.pop(live.order_id, None)
        if live.kind == "exit":
            self._post(("exit_ended", live.position_id, live.order_id))
            return
        if status == "closed" and filled >= live.qty:
            return  # filled: the fills ended it
        reason = live.cancel_reason or _TIF_END.get(live.tif) or (
            "the rest of an immediate-or-cancel order" if live.ioc else f"{status} at the venue")
        self._post(OrderCanceled(account_id=self.b.account_id, ts=self._now(),
                                 order_id=live.order_id, profile_id=live.profile_id,
                                 reason=reason))

    # -- canceling ----------------------------------------------------------------------

    def cancel(self, order_id: str, reason: str) -> None:
        live = self.live.get(order_id)
        if live is None:
            return
        live.cancel_reason = live.cancel_reason or reason
        if live.state == "OPEN":
            self._cancel(live)

    def _cancel(self, live: Live) -> None:
        import ccxt

        try:
            self.client.cancel_order(live.venue_id, live.venue_symbol)
            live.cancel_sent = True
        except ccxt.OrderNotFound:  # it ended already: the poll says how
            live.cancel_sent = True
        except ccxt.NetworkError as exc:
            logger.warning("canceling {} failed ({}); trying again", live.order_id,
                           _short(exc))
            return
        self._refresh(live)

    # -- restoring ----------------------------------------------------------------------

    def adopt(self, live: Live) -> None:
        """After a restart: an order capflow recorded. Find it by its client id; an order
        that had no fill booked and is not found is sent (same id) after the lookups."""
        self.live[live.order_id] = live
        live.accepted = True
        live.state = "UNKNOWN"
        self._lookup(live)

    def superseded(self, live: Live) -> None:
        """An exit whose outcome is unknown, of a position another exit of which filled
        at the venue: it is no longer looked up nor sent again (that would sell twice)."""
        logger.warning("exit {} ({}) of position {}: another exit of the position filled "
                       "at the venue; it is not sent again", live.order_id, live.cid,
                       live.position_id)
        live.state = "DONE"
        self.live.pop(live.order_id, None)
        self._post(("exit_ended", live.position_id, live.order_id))

    # -- polling ------------------------------------------------------------------------

    def poll(self) -> None:
        self.poll_orders()
        self.b.worker.sends_first()
        self.b.poll_balance()
        self.b.worker.sends_first()
        self.b.reconcile_if_due()

    def poll_orders(self, lookups: bool = True) -> None:
        """Follow every order; without `lookups`, those whose outcome is unknown wait
        for the next poll (a lookup may send one again). The sends waiting go out
        between two orders (`VenueWorker.sends_first`)."""
        for live in list(self.live.values()):
            self.b.worker.sends_first()
            if live.state == "UNKNOWN":
                if lookups:
                    self._lookup(live)
            elif live.state == "OPEN":
                if live.cancel_reason is not None and not live.cancel_sent:
                    self._cancel(live)
                else:
                    self._refresh(live)


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:300] + "..."
