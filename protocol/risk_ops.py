"""The risk ops: `risk.check` (what-if), `risk.reset` (breakers, by hand), the kill
switches `system.set_state` (global) and `account.set_state` (one broker account), and
`flatten`. The rules of a handler are protocol/opkit.py's."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from capflow.actors.model import messages as m
from capflow.protocol.answers import global_state_map, trip_map
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
    then,
)

Breaker = Literal["daily", "weekly", "monthly", "max"]


class RiskCheckArgs(Args, frozen=True):
    profile_id: Id
    symbol: Symbol
    side: Side
    #: default: the market's last price
    price: Amount | None = None
    qty: Amount | None = None
    notional: Amount | None = None
    tp_pct: Amount | None = None
    sl_pct: Amount | None = None
    strategy: Text | None = None
    sizing: Literal["refuse", "shrink"] | None = None


class RiskResetArgs(Args, frozen=True):
    profile_id: Id
    #: which breakers (default: every tripped one)
    breakers: Annotated[list[Breaker], Meta(max_length=4)] = []
    reason: Text = ""


class SystemStateArgs(Args, frozen=True):
    state: Name
    reason: Text = ""


class AccountStateArgs(Args, frozen=True):
    account_id: Id
    state: Name
    reason: Text = ""


class FlattenArgs(Args, frozen=True):
    client_request_id: Id
    scope: Literal["profile", "account", "all"]
    profile_id: Id | None = None
    account_id: Id | None = None
    reason: Text = ""


def op_risk_check(ctx: OpContext, a: RiskCheckArgs, caller: Caller, done: Done) -> None:
    caller.check(a.profile_id)
    raw = {k: v for k, v in msgspec.structs.asdict(a).items()
           if v is not None and k != "profile_id"}
    if a.price is None:
        tick = ctx.system.trading.board.get(a.symbol)
        if tick is None:
            raise WireError("INVALID_ARGUMENT", f"no market price for {a.symbol!r} yet: "
                                                "give a price", {"field": "price"})
        raw["price"] = str(tick.last)
    ctx.system.risk_check(a.profile_id, raw, then(done, lambda answer: answer))


def op_risk_reset(ctx: OpContext, a: RiskResetArgs, caller: Caller, done: Done) -> None:
    caller.check(a.profile_id)
    cmd = m.ResetBreakers(kinds=tuple(a.breakers), reason=a.reason,
                          changed_by=caller.name)

    def build(out) -> dict:
        return {"profile_id": a.profile_id, "reset": [trip_map(t) for t in out.result]}

    ctx.system.submit(a.profile_id, cmd, then(done, build))


def op_system_set_state(ctx: OpContext, a: SystemStateArgs, caller: Caller,
                        done: Done) -> None:
    if caller.profiles is not None:
        raise WireError("FORBIDDEN", "only a client allowed every profile ('*') may set "
                                     "the global trading state", {})
    ctx.run_blocking(lambda: global_state_map(ctx.system.set_global_state(
        a.state, a.reason, caller.name)), done)


def op_account_set_state(ctx: OpContext, a: AccountStateArgs, caller: Caller,
                         done: Done) -> None:
    if caller.profiles is not None:
        raise WireError("FORBIDDEN", "only a client allowed every profile ('*') may set "
                                     "an account's trading state", {})

    def work():
        st = ctx.system.set_account_state(a.account_id, a.state, a.reason, caller.name)
        return {"account_id": a.account_id, **global_state_map(st)}

    ctx.run_blocking(work, done)


def op_flatten(ctx: OpContext, a: FlattenArgs, caller: Caller, done: Done) -> None:
    target = {"profile": a.profile_id, "account": a.account_id, "all": None}[a.scope]
    other = {"profile": a.account_id, "account": a.profile_id,
             "all": a.profile_id or a.account_id}[a.scope]
    if a.scope != "all" and target is None:
        field = "profile_id" if a.scope == "profile" else "account_id"
        raise WireError("INVALID_ARGUMENT", f"a {a.scope} flatten needs {field}",
                        {"field": field})
    if other is not None:
        field = "account_id" if a.scope == "profile" or a.account_id else "profile_id"
        raise WireError("INVALID_ARGUMENT", f"a {a.scope} flatten takes no {field}",
                        {"field": field})
    if a.scope == "profile":
        caller.check(a.profile_id)
    elif caller.profiles is not None:
        raise WireError("FORBIDDEN", "only a client allowed every profile ('*') may flatten "
                                     "an account or everything", {})
    ctx.run_blocking(lambda: ctx.system.flatten(
        a.scope, target, client_request_id=a.client_request_id, reason=a.reason,
        requested_by=caller.name), done)


RISK_OPS: OpTable = {
    "risk.check": (RiskCheckArgs, op_risk_check),
    "risk.reset": (RiskResetArgs, op_risk_reset),
    "system.set_state": (SystemStateArgs, op_system_set_state),
    "account.set_state": (AccountStateArgs, op_account_set_state),
    "flatten": (FlattenArgs, op_flatten),
}
