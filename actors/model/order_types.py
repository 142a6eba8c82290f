"""Entry order types and time in force, the pure part: what a submitted order may say,
what its capital is reserved at, and when a stop is touched.

Order types (``type``):

- ``MARKET``: fills at the market on the next tick.
- ``LIMIT``: fills at its ``price`` or better.
- ``STOP``: rests until its ``trigger_price`` is touched, then is a market order: a BUY
  stop is touched when the ask reaches the trigger or above, a SELL stop when the bid
  reaches it or below. Its capital is reserved as a market order's at the worse of the
  trigger and the market now, plus ``[oms] reserve_buffer_pct`` and the taker fee; it
  never fills above that (`max_price`): a gap past it cancels the order.
- ``STOP_LIMIT``: rests until ``trigger_price`` is touched, then is a limit order at its
  ``price``; reserved as a limit order at its price (a SELL at the worst of its price,
  its trigger and the market now).

Time in force (``time_in_force``): ``GTC`` (the default: until filled or canceled),
``IOC`` (what fills on the first tick it can trade on; the rest is canceled,
``ioc_remainder``), ``FOK`` (all of it on that tick, or nothing: ``fok_unfilled``),
``GTD`` (until ``expire_at``, an absolute UTC time, then ``expired``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from capflow.actors.model.errors import Denial, InvalidArgument

ORDER_TYPES = ("MARKET", "LIMIT", "STOP", "STOP_LIMIT")
#: the types that wait for their trigger price
TRIGGERED_TYPES = ("STOP", "STOP_LIMIT")
TIME_IN_FORCE = ("GTC", "IOC", "FOK", "GTD")
#: how far ahead a GTD order's expiry may be
GTD_MAX = timedelta(days=365)
#: the reasons an order's remainder is canceled for by its time in force
EXPIRED, IOC_REMAINDER, FOK_UNFILLED = "expired", "ioc_remainder", "fok_unfilled"
#: a live venue that cannot take the order's type or time in force
VENUE_UNSUPPORTED_ORDER = "VENUE_UNSUPPORTED_ORDER"


def parse_order_type(value: object) -> str:
    """One of `ORDER_TYPES`, in any case (ASCII letters only)."""
    ok = isinstance(value, str) and value.isascii()
    kind = value.upper() if ok else None
    if kind not in ORDER_TYPES:
        raise InvalidArgument("type", f"type must be one of {list(ORDER_TYPES)}")
    return kind


def parse_time_in_force(value: object) -> str:
    """One of `TIME_IN_FORCE` (None: GTC), in any case (ASCII letters only)."""
    if value is None:
        return "GTC"
    ok = isinstance(value, str) and value.isascii()
    tif = value.upper() if ok else None
    if tif not in TIME_IN_FORCE:
        raise InvalidArgument("time_in_force",
                              f"time_in_force must be one of {list(TIME_IN_FORCE)}")
    return tif


def parse_expire_at(value: object, tif: str, now: datetime) -> datetime | None:
    """A GTD order's expiry: an ISO 8601 time with its UTC offset (``2026-12-07T10:00:00Z``)
    or seconds since the epoch; in the future and at most `GTD_MAX` ahead. Required with
    GTD, refused with any other time in force."""
    if tif != "GTD":
        if value is not None:
            raise InvalidArgument("expire_at", "expire_at goes only with time_in_force GTD")
        return None
    if value is None:
        raise InvalidArgument("expire_at", "a GTD order needs expire_at (a UTC time)")
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int | float):
            at = datetime.fromtimestamp(value, UTC)
        elif isinstance(value, str):
            at = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if at.tzinfo is None:
                raise InvalidArgument("expire_at", "expire_at must name its UTC offset "
                                                   "(e.g. 2026-12-07T10:00:00Z)")
            at = at.astimezone(UTC)
        else:
            raise ValueError
    except (ValueError, OverflowError, OSError) as exc:
        raise InvalidArgument("expire_at", "expire_at must be an ISO 8601 time with its "
                                           "offset or seconds since the epoch") from exc
    if at <= now:
        raise InvalidArgument("expire_at", f"expire_at {at.isoformat()} is not in the future")
    if at - now > GTD_MAX:
        raise InvalidArgument("expire_at", f"expire_at may be at most {GTD_MAX.days} days "
                                           "ahead")
    return at


def check_order_fields(type: str, price: Decimal | None,
                       trigger: Decimal | None) -> None:
    """The prices each type needs: a LIMIT and a STOP_LIMIT their price, a STOP and a
    STOP_LIMIT their trigger; no trigger on the others, no price on a STOP."""
    if type in ("LIMIT", "STOP_LIMIT") and price is None:
        raise InvalidArgument("price", f"a {type} order needs a price")
    if type in TRIGGERED_TYPES and trigger is None:
        raise InvalidArgument("trigger_price", f"a {type} order needs a trigger_price")
    if type not in TRIGGERED_TYPES and trigger is not None:
        raise InvalidArgument("trigger_price", "trigger_price goes only with STOP and "
                                               "STOP_LIMIT orders")
    if type == "STOP" and price is not None:
        raise InvalidArgument("price", "a STOP order fills at the market once triggered: "
                                       "give trigger_price, not price (STOP_LIMIT has both)")


def touched(side: str, trigger: Decimal, bid: Decimal, ask: Decimal) -> bool:
    """Whether a tick touches a stop's trigger: a BUY's when the ask is at or above it, a
    SELL's when the bid is at or below it."""
    return ask >= trigger if side == "BUY" else bid <= trigger


def venue_refusal(type: str, tif: str) -> Denial | None:
    """A live spot venue (through ccxt) takes MARKET and LIMIT orders with GTC, IOC or
    FOK; stops and GTD are refused before any capital is reserved."""
    if type in TRIGGERED_TYPES or tif == "GTD":
        what = f"{type} orders" if type in TRIGGERED_TYPES else "GTD orders"
        return Denial("RISK_REJECTED", f"the live venue adapter does not place {what}",
                      {"reason": VENUE_UNSUPPORTED_ORDER, "limit": None,
                       "value": type if type in TRIGGERED_TYPES else tif})
    return None
