"""The allocation ops: `allocation.quote`, `allocation.reserve`, `allocation.release`,
and `liquidity.set` (the signal the quotes are sized by). The rules of a handler are
protocol/opkit.py's."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from capflow.actors.model import messages as m
from capflow.actors.model.money import parse_decimal
from capflow.protocol.answers import reservation_map
from capflow.protocol.codec import WireError
from capflow.protocol.opkit import (
    Amount,
    Args,
    Caller,
    Done,
    Id,
    OpContext,
    OpTable,
    Symbol,
    Text,
    submit,
    then,
)


class ReserveArgs(Args, frozen=True):
    profile_id: Id
    symbol: Symbol
    amount: Amount
    client_request_id: Id
    ttl_s: Annotated[int, Meta(ge=1, le=604800)] | None = None


class QuoteArgs(Args, frozen=True):
    profile_id: Id
    symbol: Symbol
    #: accepted for the contract; the quote uses the profile's own account
    market: Text | None = None
    #: accepted for the contract; positions are valued at the market's last price
    price_hint: Amount | None = None


class LiquiditySetArgs(Args, frozen=True):
    score: Amount
    symbol: Symbol = "*"
    risk_regime: Annotated[str, Meta(min_length=1, max_length=32)] = "NORMAL"
    volatility: Amount = 0
    confidence: Amount = 100


class ReleaseArgs(Args, frozen=True):
    profile_id: Id
    reservation_id: Id
    reason: Text | None = None


def op_quote(ctx: OpContext, a: QuoteArgs, caller: Caller, done: Done) -> None:
    caller.check(a.profile_id)
    if a.price_hint is not None:
        parse_decimal(a.price_hint, "price_hint")  # accepted, but not any string
    ctx.system.allocation.quote(a.profile_id, a.symbol,
                                then(done, lambda decision: decision.to_map()))


def op_reserve(ctx: OpContext, a: ReserveArgs, caller: Caller, done: Done) -> None:
    caller.check(a.profile_id)
    ctx.system.allocation.reserve(
        a.profile_id, a.symbol, a.amount, a.client_request_id, a.ttl_s,
        then(done, lambda out: reservation_map(out.result, out.reused)))


def op_liquidity_set(ctx: OpContext, a: LiquiditySetArgs, caller: Caller,
                     done: Done) -> None:
    if caller.profiles is not None:
        raise WireError("FORBIDDEN", "only a client allowed every profile ('*') may set "
                                     "the liquidity signal", {})
    done(ctx.system.set_liquidity(a.symbol, score=a.score, risk_regime=a.risk_regime,
                                  volatility=a.volatility, confidence=a.confidence))


def op_release(ctx: OpContext, a: ReleaseArgs, caller: Caller, done: Done) -> None:
    caller.check(a.profile_id)
    cmd = m.ReleaseReservation(reservation_id=a.reservation_id, reason=a.reason or "client")
    submit(ctx, a.profile_id, cmd, done,
           lambda out: {"released": True, "reservation_id": out.result.reservation_id,
                        "amount": out.result.amount})


ALLOCATION_OPS: OpTable = {
    "allocation.quote": (QuoteArgs, op_quote),
    "allocation.reserve": (ReserveArgs, op_reserve),
    "allocation.release": (ReleaseArgs, op_release),
    "liquidity.set": (LiquiditySetArgs, op_liquidity_set),
}
