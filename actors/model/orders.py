"""Order management, the pure part: what an order is, how a signal becomes one.

No I/O and no threads. The `Ledger` calls these inside its actor, so sizing, checks and
the capital reservation that follows are one step for a profile.

Percentages (`tp_pct`, `sl_pct`, `risk_per_trade_pct`, `reserve_buffer_pct`) are in
percent: ``2`` means 2 %.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec

from capflow.actors.model.errors import InvalidArgument
from capflow.actors.model.money import (
    CONTEXT,
    ZERO,
    parse_decimal,
    quant,
    round_down,
    round_half_even,
    round_up,
)
from capflow.actors.model.order_types import (  # noqa: F401 -- re-exported
    ORDER_TYPES,
    parse_expire_at,
    parse_order_type,
    parse_time_in_force,
)
from capflow.actors.model.trailing import Trail, parse_trail
from capflow.actors.model.venue import VenueRule, qty_down

SIDES = {"BUY": "BUY", "SELL": "SELL", "LONG": "BUY", "SHORT": "SELL"}
#: why a position closed: its take-profit, its stop-loss, its trailing stop, by hand
#: (`position.close`), or by a flatten (every position of a profile, an account or all,
#: closed at once)
CLOSE_REASONS = ("tp", "sl", "manual", "flatten", "trail")
HUNDRED = Decimal(100)
#: what a symbol may be made of: letters, digits and ``._/:-`` (and ``_``), 1..64 of them
SYMBOL_MAX_LENGTH = 64
SYMBOL_PATTERN = r"\A[A-Za-z0-9._/:\-]{1,64}\Z"
_SYMBOL = re.compile(SYMBOL_PATTERN)


def parse_symbol(value: object, field: str = "symbol") -> str:
    """A symbol name, or `InvalidArgument`: ASCII letters, digits and ``. _ / : -``."""
    if not isinstance(value, str) or not _SYMBOL.match(value):
        raise InvalidArgument(field, f"{field} must be 1..{SYMBOL_MAX_LENGTH} characters of "
                                     "ASCII letters, digits and . _ / : -")
    return value


#: the client order id under which the order of a signal with an id is recorded
SIGNAL_KEY_PREFIX = "signal:"


def parse_side(value: object) -> str:
    """BUY or SELL, from any case of BUY, SELL, LONG, SHORT (ASCII letters only: other
    letters that `str.upper` folds onto them are not these names)."""
    ok = isinstance(value, str) and value.isascii()
    side = SIDES.get(value.upper()) if ok else None
    if side is None:
        raise InvalidArgument("side", "side must be BUY or SELL (or long / short)")
    return side


class OrderSpec(msgspec.Struct, frozen=True, kw_only=True):
    """An order as submitted: everything but its capital and fills."""

    order_id: str
    position_id: str
    symbol: str
    side: str
    type: str = "MARKET"
    qty: Decimal
    #: the limit price (LIMIT); for a MARKET order the price it was decided on, if given
    price: Decimal | None = None
    tp_price: Decimal | None = None
    sl_price: Decimal | None = None
    client_order_id: str | None = None
    account_id: str | None = None
    reservation_id: str | None = None
    signal_id: str | None = None
    strategy: str | None = None
    exchange: str | None = None
    #: the market price a MARKET order without `price` was decided on (risk checks)
    ref_price: Decimal | None = None
    #: the highest price its capital was reserved for: the broker never fills it above
    #: this (a MARKET entry behaves as a limit here; what cannot fill is canceled)
    max_price: Decimal | None = None
    #: the price that turns a STOP / STOP_LIMIT into a market / limit order
    trigger_price: Decimal | None = None
    #: GTC, IOC, FOK or GTD (order_types.py); a GTD order expires at `expire_at`
    time_in_force: str = "GTC"
    expire_at: datetime | None = None
    #: the trailing stop its position gets (trailing.py)
    trail_amount: Decimal | None = None
    trail_pct: Decimal | None = None
    trail_activation: Decimal | None = None

    def fingerprint(self) -> tuple:
        """What a repeated `client_order_id` must match to be the same order."""
        base = (self.symbol, self.side, self.type, self.qty, self.price, self.tp_price,
                self.sl_price, self.reservation_id, self.trigger_price, self.time_in_force,
                self.expire_at)
        trail = (self.trail_amount, self.trail_pct, self.trail_activation)
        return base if trail == (None, None, None) else (*base, trail)


def check_protection(side: str, reference: Decimal | None, tp: Decimal | None,
                     sl: Decimal | None) -> None:
    """Take-profit beyond the reference price, stop-loss on the other side of it."""
    if reference is None:
        if tp is not None and sl is not None and (tp <= sl if side == "BUY" else tp >= sl):
            raise InvalidArgument("tp_price", "tp_price and sl_price are on the wrong sides")
        return
    if tp is not None and (tp <= reference if side == "BUY" else tp >= reference):
        raise InvalidArgument("tp_price", f"tp_price {tp} must be "
                                          f"{'above' if side == 'BUY' else 'below'} "
                                          f"the price {reference}")
    if sl is not None and (sl >= reference if side == "BUY" else sl <= reference):
        raise InvalidArgument("sl_price", f"sl_price {sl} must be "
                                          f"{'below' if side == 'BUY' else 'above'} "
                                          f"the price {reference}")


def protective_prices(side: str, price: Decimal, tp_pct: Decimal, sl_pct: Decimal,
                      places: int) -> tuple[Decimal, Decimal]:
    """(tp_price, sl_price) at `tp_pct` / `sl_pct` percent from `price`; a BUY takes
    profit above and stops below, a SELL the reverse. A level that rounds onto `price`
    (a percentage too small for the instrument's price step) or to zero is refused
    (`InvalidArgument` on the percentage), never used."""
    up = 1 if side == "BUY" else -1
    tp = round_half_even(price * (1 + up * tp_pct / HUNDRED), places)
    sl = round_half_even(price * (1 - up * sl_pct / HUNDRED), places)
    for name, level, pct in (("tp_pct", tp, tp_pct), ("sl_pct", sl, sl_pct)):
        if level <= 0:
            raise InvalidArgument(name, f"{name} {pct} puts the level at {level}: it must "
                                        "stay above zero")
        if level == round_half_even(price, places):
            raise InvalidArgument(name, f"{name} {pct} is below one price step of "
                                        f"{quant(places)} from {price}: the level would be "
                                        "the entry price itself")
    return tp, sl


def entry_reference(side: str, price: Decimal, bid: Decimal | None,
                    ask: Decimal | None) -> Decimal:
    """The price an entry's capital is reserved at: the worse of the price it was given
    and the market's (the ask for a BUY, the bid for a SELL), so a price far from the
    market never reserves less than the entry costs. Without a market, its own price."""
    market = ask if side == "BUY" else bid
    return price if market is None else max(price, market)


def protective_crossed(side: str, tp: Decimal | None, sl: Decimal | None,
                       bid: Decimal | None, ask: Decimal | None) -> str | None:
    """Which of the take-profit / stop-loss the market has already crossed (it would close
    the position on its first tick), as ``"tp_price"`` or ``"sl_price"``; None if neither
    or the market is unknown. A long exits at the bid, a short at the ask."""
    exit_price = bid if side == "BUY" else ask
    if exit_price is None:
        return None
    if side == "BUY":
        if tp is not None and tp <= exit_price:
            return "tp_price"
        if sl is not None and sl >= exit_price:
            return "sl_price"
    else:
        if tp is not None and tp >= exit_price:
            return "tp_price"
        if sl is not None and sl <= exit_price:
            return "sl_price"
    return None


def max_fill_price(qty: Decimal, reference: Decimal, buffer_pct: Decimal,
                   fee_rate: Decimal, amount: Decimal, price_places: int,
                   money_places: int) -> Decimal:
    """The highest fill price (a multiple of the price step) an entry of `qty` may get so
    that its cost -- notional and fee, each rounded up to `money_places` as the ledger
    and the paper broker book them -- stays within `amount`, its reservation at
    `reference` plus `buffer_pct`: the price the broker must not fill it above."""
    step = quant(price_places)

    def cost(price: Decimal) -> Decimal:
        notional = qty * price
        return round_up(notional, money_places) + round_up(notional * fee_rate,
                                                            money_places)

    best = round_down(reference * (1 + buffer_pct / HUNDRED), price_places)
    if cost(best) <= amount:
        return best
    lo, hi = 0, int(best / step)  # cost is monotone in the price: bisect the steps
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(mid * step) <= amount:
            lo = mid
        else:
            hi = mid - 1
    return lo * step


class Signal(msgspec.Struct, frozen=True, kw_only=True):
    """A trading signal as a bot sends it (`signal.submit`), validated."""

    symbol: str
    side: str
    price: Decimal
    timestamp: str
    signal_id: str | None = None
    exchange: str | None = None
    timeframe_min: int | None = None
    strategy: str | None = None
    tp_pct: Decimal | None = None
    sl_pct: Decimal | None = None
    qty: Decimal | None = None
    notional: Decimal | None = None
    #: beyond a limit: "refuse" or "shrink" (None: as the risk profile says)
    sizing: str | None = None
    #: its order's time in force (order_types.py) and, for GTD, its expiry
    time_in_force: str = "GTC"
    expire_at: datetime | None = None
    #: the trailing stop of its position (trailing.py)
    trail: Trail | None = None

    def fingerprint(self) -> str:
        """What a repeated `signal_id` must match to be the same signal (numbers by
        value: "100" and "100.0" are the same price)."""
        text = "|".join(str(x.normalize() if isinstance(x, Decimal) else x) for x in (
            self.symbol, self.side, self.price, self.qty, self.notional, self.tp_pct,
            self.sl_pct)) + ("" if self.time_in_force == "GTC" else
                             f"|{self.time_in_force}|{self.expire_at}")
        if self.trail is not None:
            text += f"|trail|{self.trail.amount}|{self.trail.pct}|{self.trail.activation}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def parse_signal(raw: dict[str, Any], now: datetime | None = None) -> Signal:
    """Validate the numbers and names of a signal (the wire schema checked the types);
    a GTD expiry must be after `now` (None: the time now)."""
    side = parse_side(raw.get("side"))
    tif = parse_time_in_force(raw.get("time_in_force"))
    expire_at = parse_expire_at(raw.get("expire_at"), tif, now or datetime.now(UTC))
    price = parse_decimal(raw.get("price"), "price")
    pct = {}
    for name in ("tp_pct", "sl_pct"):
        if raw.get(name) is not None:
            pct[name] = parse_decimal(raw[name], name)
            if pct[name] >= HUNDRED and (name == "sl_pct" or side == "SELL"):
                raise InvalidArgument(name, f"{name} must be below 100")
    qty = raw.get("qty")
    notional = raw.get("notional")
    sizing = raw.get("sizing")
    if sizing is not None and sizing not in ("refuse", "shrink"):
        raise InvalidArgument("sizing", "sizing must be refuse or shrink")
    if qty is not None and notional is not None:
        raise InvalidArgument("qty", "give qty or notional, not both")
    return Signal(symbol=parse_symbol(raw.get("symbol")), side=side, price=price,
                  timestamp=str(raw.get("timestamp", "")), signal_id=raw.get("signal_id"),
                  exchange=raw.get("exchange"), timeframe_min=raw.get("timeframe_min"),
                  strategy=raw.get("strategy"), tp_pct=pct.get("tp_pct"),
                  sl_pct=pct.get("sl_pct"),
                  qty=None if qty is None else parse_decimal(qty, "qty"),
                  notional=None if notional is None else parse_decimal(notional, "notional"),
                  sizing=sizing, time_in_force=tif, expire_at=expire_at,
                  trail=parse_trail(raw.get("trail_amount"), raw.get("trail_pct"),
                                    raw.get("trail_activation")))


class SignalPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """What the server decides for a signal before its profile's actor sizes it: ids,
    defaults from config, the account's fee and the instrument's precision."""

    order_id: str
    position_id: str
    account_id: str | None
    tp_pct: Decimal
    sl_pct: Decimal
    risk_per_trade_pct: Decimal
    reserve_buffer_pct: Decimal
    taker_fee: Decimal
    price_places: int
    qty_places: int
    #: set when the signal cannot be traded whatever it says (the broker account gave
    #: up connecting): a new signal is answered with this reason, a repeat as before
    blocked: str | None = None
    #: the market when the signal arrived (None: no price yet): an entry is reserved at
    #: the worse of the signal's price and the market's, and its TP / SL must not be
    #: crossed already
    bid: Decimal | None = None
    ask: Decimal | None = None
    #: the venue's rules for the symbol (a live account): the quantity is rounded down
    #: to its lot step and checked against its minimums before anything is reserved
    venue: VenueRule | None = None


class SignalAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """What capflow answers a signal: its record (None when it was refused before the
    ledger saw it, e.g. the OMS is off or the broker gave up), whether it is a repeat of
    a known `signal_id`, and the refusal's reason. `to_map` is the `signal.submit`
    answer, for the wire and the embedded API alike."""

    record: Any = None  # messages.SignalRecord | None
    reused: bool = False
    reason: str | None = None
    oms: bool = True
    #: of the first answer only (not stored): {"risk_details": the failed check with the
    #: time it passes by itself, "sizing": how the entry was shrunk}, each when it applies
    detail: dict[str, Any] | None = None

    def to_map(self) -> dict[str, Any]:
        out = self._map()
        if self.detail and not self.reused:
            out.update(self.detail)
        return out

    def _map(self) -> dict[str, Any]:
        rec = self.record
        if rec is None:
            return {"received": True, "oms_enabled": self.oms, "risk_ok": False,
                    "risk_reason": self.reason, "order_id": None, "position_id": None,
                    "tp_price": None, "sl_price": None, "qty": None, "reused": self.reused,
                    "note": self.note()}
        return {"received": True, "oms_enabled": self.oms, "risk_ok": rec.risk_ok,
                "risk_reason": rec.risk_reason, "order_id": rec.order_id,
                "position_id": rec.position_id, "tp_price": rec.tp_price,
                "sl_price": rec.sl_price, "qty": rec.qty, "reused": self.reused,
                "note": self.note()}

    def note(self) -> str:
        """What happens next, in words: the answer comes before the fill. A repeat gets
        the first answer as it was, and says so: its order may have filled or closed
        since (order.get says what it is now)."""
        rec = self.record
        if self.reused and rec is not None:
            return (f"a repeat of signal {rec.signal_id}: its first answer, of "
                    f"{rec.ts:%Y-%m-%d %H:%M:%S} UTC, unchanged ({self._first()}); "
                    "order.get and position.list say what is true now")
        return self._first()

    def _first(self) -> str:
        rec = self.record
        if rec is not None and rec.order_id is not None:
            return (f"order {rec.order_id} is working; position {rec.position_id} opens "
                    "when it fills (order.get, position.list)")
        if not self.oms:
            return "recorded only: the OMS is off, nothing is traded"
        reason = rec.risk_reason if rec is not None else self.reason
        return f"not traded: {reason or 'no order'}"


def size_signal(signal: Signal, policy: SignalPolicy, equity: Decimal,
                sl_price: Decimal) -> Decimal:
    """The order quantity: `qty` as given, else `notional` / price, else the quantity
    that loses `risk_per_trade_pct` of `equity` at the stop. Rounded down to the
    instrument's quantity step (zero when too small)."""
    if signal.qty is not None:
        if policy.venue is not None:  # the venue's lot step, not the simulator's places
            return qty_down(signal.qty, policy.venue)
        if signal.qty != round_down(signal.qty, policy.qty_places):
            raise InvalidArgument("qty", f"qty has more than {policy.qty_places} decimal "
                                         f"places for {signal.symbol}")
        return signal.qty
    if signal.notional is not None:
        raw = signal.notional / signal.price
    else:
        stop = abs(signal.price - sl_price)
        if stop == 0 or equity <= 0:
            return ZERO
        raw = equity * policy.risk_per_trade_pct / HUNDRED / stop
    qty = max(round_down(CONTEXT.plus(raw), policy.qty_places), ZERO)
    return qty if policy.venue is None else qty_down(qty, policy.venue)


def entry_cost(qty: Decimal, price: Decimal, fee_rate: Decimal, places: int) -> Decimal:
    """What an entry of `qty` filled at `price` costs as it is booked: its notional and
    its fee, each rounded up to `places` (what a LIMIT entry reserves at its limit)."""
    notional = qty * price
    return round_up(notional, places) + round_up(notional * fee_rate, places)


def order_reservation(qty: Decimal, price: Decimal, buffer_pct: Decimal, fee_rate: Decimal,
                      places: int) -> Decimal:
    """Capital a market order reserves: notional at `price`, plus the slippage buffer,
    plus the fee on that, rounded up (never under-reserve)."""
    return round_up(qty * price * (1 + buffer_pct / HUNDRED) * (1 + fee_rate), places)


def weighted_price(prev_price: Decimal | None, prev_qty: Decimal, price: Decimal,
                   qty: Decimal) -> Decimal:
    """Volume-weighted average of two prices, to 10 places."""
    if prev_price is None or prev_qty == 0:
        return price
    return round_half_even((prev_price * prev_qty + price * qty) / (prev_qty + qty), 10
                           ).normalize()

