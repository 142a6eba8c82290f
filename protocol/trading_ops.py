"""The trading ops: `signal.submit`, `order.*`, `position.*`, `stats.get`,
`market.price`. The rules of a handler are protocol/opkit.py's; reads of storage run on
the worker pool, so the socket thread never blocks."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from capflow.actors.model import messages as m
from capflow.actors.model.stats import stats_map
from capflow.protocol.answers import order_map, position_map, price_map
from capflow.protocol.codec import WireError
from capflow.protocol.opkit import (
    Amount,
    Args,
    Caller,
    Done,
    Id,
    Name,
    OpContext,
    OpTable,
    Side,
    Symbol,
    Text,
)

Limit = Annotated[int, Meta(ge=1, le=1000)]
#: a GTD order's expiry: an ISO 8601 time with its offset, or seconds since the epoch
ExpireAt = Annotated[str, Meta(max_length=64)] | int | float


class SignalArgs(Args, frozen=True):
    profile_id: Id
    symbol: Symbol
    side: Side
    price: Amount
    timestamp: Annotated[str, Meta(max_length=64)] | int | float
    signal_id: Id | None = None
    exchange: Annotated[str, Meta(max_length=64)] | None = None
    timeframe_min: Annotated[int, Meta(ge=0, le=525600)] | None = None
    strategy: Text | None = None
    tp_pct: Amount | None = None
    sl_pct: Amount | None = None
    qty: Amount | None = None
    notional: Amount | None = None
    #: beyond a limit: refuse it, or shrink it to what the limits allow (default: the
    #: risk profile's `sizing`, else refuse)
    sizing: Literal["refuse", "shrink"] | None = None
    time_in_force: Name | None = None
    expire_at: ExpireAt | None = None
    trail_amount: Amount | None = None
    trail_pct: Amount | None = None
    trail_activation: Amount | None = None


class OrderSubmitArgs(Args, frozen=True):
    profile_id: Id
    client_order_id: Id
    symbol: Symbol
    side: Side
    type: Name
    qty: Amount
    price: Amount | None = None
    tp_price: Amount | None = None
    sl_price: Amount | None = None
    reservation_id: Id | None = None
    trigger_price: Amount | None = None
    time_in_force: Name | None = None
    expire_at: ExpireAt | None = None
    trail_amount: Amount | None = None
    trail_pct: Amount | None = None
    trail_activation: Amount | None = None
    #: add to this open position (scale-in) instead of opening a new one
    position_id: Id | None = None


class OrderRefArgs(Args, frozen=True):
    profile_id: Id
    order_id: Id


class OrderAmendArgs(Args, frozen=True):
    profile_id: Id
    order_id: Id
    qty: Amount | None = None
    price: Amount | None = None
    trigger_price: Amount | None = None


class ListArgs(Args, frozen=True):
    profile_id: Id
    status: Annotated[str, Meta(min_length=1, max_length=24)] | None = None
    symbol: Symbol | None = None
    limit: Limit = 100
    cursor: Text | None = None


class PositionCloseArgs(Args, frozen=True):
    profile_id: Id
    position_id: Id
    reason: Text | None = None


class PositionSetStopsArgs(Args, frozen=True):
    profile_id: Id
    position_id: Id
    tp_price: Amount | None = None
    sl_price: Amount | None = None
    trail_amount: Amount | None = None
    trail_pct: Amount | None = None
    trail_activation: Amount | None = None
    clear: Annotated[list[Literal["tp", "sl", "trail"]], Meta(max_length=3)] = []


class PositionReduceArgs(Args, frozen=True):
    profile_id: Id
    position_id: Id
    qty: Amount | None = None
    fraction: Amount | None = None


class StatsArgs(Args, frozen=True):
    profile_id: Id | None = None
    group_by: Literal["strategy", "symbol", "exchange"] | None = None


class PriceArgs(Args, frozen=True):
    symbol: Symbol


# -- handlers --------------------------------------------------------------------------

def op_signal(ctx: OpContext, a: SignalArgs, caller: Caller, done: Done) -> None:
    caller.check(a.profile_id)
    raw = {k: v for k, v in msgspec.structs.asdict(a).items()
           if v is not None and k != "profile_id"}

    def answered(reply) -> None:
        answer, error = reply.result()
        if error is not None:
            done(error=WireError.of(error))
        else:
            done(answer.to_map())

    ctx.system.trading.submit_signal(a.profile_id, raw, answered)


def op_order_submit(ctx: OpContext, a: OrderSubmitArgs, caller: Caller, done: Done) -> None:
    caller.check(a.profile_id)
    pid = a.profile_id
    trading = ctx.system.trading

    def answered(reply) -> None:
        out, error = reply.result()
        if error is not None:
            done(error=WireError.of(error))
        elif isinstance(out.result, m.OrderCapital):
            done({**order_map(pid, out.result), "reused": out.reused})
        else:  # a repeat of an order that has finished: read it back
            ctx.run_blocking(lambda: {**order_map(pid, trading.get_order(pid, out.result)),
                                      "reused": True}, done)

    trading.submit_order(pid, client_order_id=a.client_order_id, symbol=a.symbol,
                         side=a.side, type=a.type, qty=a.qty, price=a.price,
                         tp_price=a.tp_price, sl_price=a.sl_price,
                         reservation_id=a.reservation_id, trigger_price=a.trigger_price,
                         time_in_force=a.time_in_force, expire_at=a.expire_at,
                         trail_amount=a.trail_amount, trail_pct=a.trail_pct,
                         trail_activation=a.trail_activation, position_id=a.position_id,
                         callback=answered)


def op_order_cancel(ctx: OpContext, a: OrderRefArgs, caller: Caller, done: Done) -> None:
    caller.check(a.profile_id)
    trading = ctx.system.trading
    ctx.run_blocking(lambda: order_map(a.profile_id,
                                       trading.cancel_order(a.profile_id, a.order_id)), done)


def op_order_amend(ctx: OpContext, a: OrderAmendArgs, caller: Caller, done: Done) -> None:
    caller.check(a.profile_id)
    trading = ctx.system.trading
    ctx.run_blocking(lambda: order_map(a.profile_id, trading.amend_order(
        a.profile_id, a.order_id, qty=a.qty, price=a.price, trigger_price=a.trigger_price)),
        done)


def op_order_get(ctx: OpContext, a: OrderRefArgs, caller: Caller, done: Done) -> None:
    caller.check(a.profile_id)
    trading = ctx.system.trading
    ctx.run_blocking(lambda: order_map(a.profile_id,
                                       trading.get_order(a.profile_id, a.order_id)), done)


def _filters(a: ListArgs) -> dict[str, Any]:
    # ASCII only: `str.upper` would fold other letters onto the names (U+017F -> "S")
    status = a.status.upper() if a.status and a.status.isascii() else a.status
    return {"status": status, "symbol": a.symbol,
            "limit": a.limit, "cursor": a.cursor}


def op_order_list(ctx: OpContext, a: ListArgs, caller: Caller, done: Done) -> None:
    caller.check(a.profile_id)

    def work():
        page, nxt = ctx.system.trading.list_orders(a.profile_id, **_filters(a))
        return {"orders": [order_map(a.profile_id, o) for o in page], "next_cursor": nxt}

    ctx.run_blocking(work, done)


def op_position_list(ctx: OpContext, a: ListArgs, caller: Caller, done: Done) -> None:
    caller.check(a.profile_id)

    def work():
        page, nxt = ctx.system.trading.list_positions(a.profile_id, **_filters(a))
        return {"positions": [position_map(a.profile_id, p) for p in page],
                "next_cursor": nxt}

    ctx.run_blocking(work, done)


def op_position_close(ctx: OpContext, a: PositionCloseArgs, caller: Caller,
                      done: Done) -> None:
    caller.check(a.profile_id)

    def work():
        p = ctx.system.trading.close_position(a.profile_id, a.position_id, "manual")
        return {**position_map(a.profile_id, p), "close_requested": True}

    ctx.run_blocking(work, done)


def op_position_set_stops(ctx: OpContext, a: PositionSetStopsArgs, caller: Caller,
                          done: Done) -> None:
    caller.check(a.profile_id)

    def work():
        p = ctx.system.trading.set_stops(
            a.profile_id, a.position_id, tp_price=a.tp_price, sl_price=a.sl_price,
            trail_amount=a.trail_amount, trail_pct=a.trail_pct,
            trail_activation=a.trail_activation, clear=tuple(a.clear))
        return position_map(a.profile_id, p)

    ctx.run_blocking(work, done)


def op_position_reduce(ctx: OpContext, a: PositionReduceArgs, caller: Caller,
                       done: Done) -> None:
    caller.check(a.profile_id)

    def work():
        p, qty, closing = ctx.system.trading.reduce_position(
            a.profile_id, a.position_id, qty=a.qty, fraction=a.fraction)
        return {**position_map(a.profile_id, p), "reduce_qty": qty,
                "close_requested": closing}

    ctx.run_blocking(work, done)


def op_stats(ctx: OpContext, a: StatsArgs, caller: Caller, done: Done) -> None:
    if a.profile_id is not None:
        caller.check(a.profile_id)

    def work():
        overall, groups = ctx.system.trading.stats(a.profile_id, a.group_by,
                                                   only=caller.profiles)
        out = stats_map(overall)
        if groups is not None:
            out["groups"] = {k: stats_map(v) for k, v in groups.items()}
        return out

    ctx.run_blocking(work, done)


def op_price(ctx: OpContext, a: PriceArgs, caller: Caller, done: Done) -> None:
    done(price_map(ctx.system.trading.price(a.symbol)))


TRADING_OPS: OpTable = {
    "signal.submit": (SignalArgs, op_signal),
    "order.submit": (OrderSubmitArgs, op_order_submit),
    "order.amend": (OrderAmendArgs, op_order_amend),
    "order.cancel": (OrderRefArgs, op_order_cancel),
    "order.get": (OrderRefArgs, op_order_get),
    "order.list": (ListArgs, op_order_list),
    "position.list": (ListArgs, op_position_list),
    "position.set_stops": (PositionSetStopsArgs, op_position_set_stops),
    "position.reduce": (PositionReduceArgs, op_position_reduce),
    "position.close": (PositionCloseArgs, op_position_close),
    "stats.get": (StatsArgs, op_stats),
    "market.price": (PriceArgs, op_price),
}
