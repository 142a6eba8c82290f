"""The v1 operations: one typed schema per op, and a handler that never blocks.

A handler validates its arguments (msgspec: unknown keys and wrong types are
`INVALID_ARGUMENT` naming the field), checks that the client may touch the profile, and
sends commands to the ledger actors with a callback; the answer is delivered by calling
`done` from whatever thread finishes the work. Ops that must do blocking work run on the
server's small worker pool.
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from capflow.actors.model import messages as m
from capflow.actors.model.ledger import LedgerView, ProfileView
from capflow.actors.model.messages import Reservation
from capflow.actors.model.money import parse_decimal
from capflow.actors.model.orders import SYMBOL_PATTERN
from capflow.actors.reply import Reply
from capflow.protocol.codec import VERSION, WireError, quote

ID_MAX = 128
Id = Annotated[str, Meta(min_length=1, max_length=ID_MAX)]
Text = Annotated[str, Meta(max_length=128)]
#: ASCII letters, digits and ``. _ / : -`` (`actors.orders.SYMBOL_PATTERN`)
Symbol = Annotated[str, Meta(min_length=1, max_length=64, pattern=SYMBOL_PATTERN)]
Amount = str | int | float
Done = Callable[..., None]  # done(result) or done(error=WireError)


class Args(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class NoArgs(Args, frozen=True):
    pass


class ProfileArgs(Args, frozen=True):
    profile_id: Id


class ProfileCreateArgs(Args, frozen=True):
    profile_id: Id
    allocated: Amount
    risk_profile: Text | None = None
    account_id: Id | None = None
    currency: Annotated[str, Meta(min_length=1, max_length=16)] | None = None


class ProfileListArgs(Args, frozen=True):
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100
    cursor: Text | None = None


class SetStateArgs(Args, frozen=True):
    profile_id: Id
    state: Annotated[str, Meta(min_length=1, max_length=16)]
    reason: Text = ""


class TransferArgs(Args, frozen=True):
    profile_id: Id
    amount: Amount
    client_request_id: Id


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


# -- results ---------------------------------------------------------------------------

_BUCKETS = ("allocated", "held", "reserved_for_orders", "reserved_for_positions",
            "realized_pnl", "fees", "available")


def ledger_map(v: LedgerView) -> dict[str, Any]:
    out = {name: getattr(v, name) for name in _BUCKETS}
    out.update(profile_id=v.profile_id, currency=v.currency, state=v.state)
    return out


def profile_map(pv: ProfileView) -> dict[str, Any]:
    p = pv.profile
    return {"profile_id": p.profile_id, "currency": p.currency, "account_id": p.account_id,
            "risk_profile": p.risk_profile, "state": p.state, "state_reason": p.state_reason,
            "state_by": p.state_by, "state_at": p.state_at, "created_at": p.created_at,
            "initial_allocation": pv.initial_allocation, "ledger": ledger_map(pv.ledger),
            "risk": pv.risk}


def reservation_map(h: Reservation, reused: bool) -> dict[str, Any]:
    return {"reservation_id": h.reservation_id, "client_request_id": h.client_request_id,
            "symbol": h.symbol, "amount": h.amount, "status": h.status,
            "created_at": h.created_at, "expires_at": h.expires_at, "reused": reused}


# -- the handlers ----------------------------------------------------------------------

@dataclass(frozen=True)
class Caller:
    """Who sent the request: a name for the audit trail, and the profiles it may touch
    (None: all, in plain mode or for a key allowed ``*``)."""

    name: str
    profiles: frozenset[str] | None = None

    def check(self, profile_id: str) -> None:
        if self.profiles is not None and profile_id not in self.profiles:
            raise WireError("FORBIDDEN", f"this client may not touch profile {profile_id!r}",
                            {"profile_id": profile_id})


class OpContext:
    def __init__(self, system, server_info: Callable[[], dict[str, Any]], run_blocking,
                 metrics: Callable[[], dict[str, Any]] | None = None):
        self.system = system
        self.server_info = server_info
        self.run_blocking = run_blocking  # (fn, done) -> None: fn() on the worker pool
        #: the gateway's request metrics; called on its socket thread, like the handlers
        self.metrics = metrics


def _then(done: Done, build: Callable[[Any], Any]) -> Callable[[Reply], None]:
    """A Reply callback that turns the outcome into an answer (or an error answer)."""

    def callback(reply: Reply) -> None:
        value, error = reply.result()
        if error is not None:
            done(error=WireError.of(error))
            return
        try:
            done(build(value))
        except Exception as exc:  # a failed follow-up call, or a bug: still one answer
            done(error=WireError.of(exc))

    return callback


def _submit(ctx: OpContext, pid: str, cmd: m.Command, done: Done, build) -> None:
    ctx.system.submit(pid, cmd, _then(done, build))


def op_health(ctx: OpContext, args: NoArgs, caller: Caller, done: Done) -> None:
    info = ctx.server_info()
    if caller.profiles is not None:
        # a key limited to some profiles learns nothing of the others (not even how many
        # there are), nor where the data lives
        info["profiles"] = info["storage"] = None
        # the reasons name profiles and accounts; the status alone says something is off
        info["reasons"] = None
    done(info)


def op_metrics(ctx: OpContext, args: NoArgs, caller: Caller, done: Done) -> None:
    # open to every caller, like system.health: counts and latencies per op, nothing
    # about any profile
    if ctx.metrics is None:
        raise WireError("UNAVAILABLE", "this server keeps no request metrics", {})
    done(ctx.metrics())


def op_profile_create(ctx: OpContext, a: ProfileCreateArgs, caller: Caller,
                      done: Done) -> None:
    caller.check(a.profile_id)

    def work():
        view, existed = ctx.system.ensure_profile(
            a.profile_id, a.allocated, currency=a.currency, risk_profile=a.risk_profile,
            account_id=a.account_id)
        return {**profile_map(view), "reused": existed}

    ctx.run_blocking(work, done)


def op_profile_get(ctx: OpContext, a: ProfileArgs, caller: Caller, done: Done) -> None:
    caller.check(a.profile_id)
    _submit(ctx, a.profile_id, m.GetProfile(), done, lambda out: profile_map(out.result))


def op_profile_list(ctx: OpContext, a: ProfileListArgs, caller: Caller, done: Done) -> None:
    def work():
        store = ctx.system.store
        # one more than asked tells whether there is a next page
        found = store.list_profiles(a.cursor or "", a.limit + 1, only=caller.profiles)
        more = len(found) > a.limit
        profiles = found[:a.limit]
        snaps = store.snapshots([p.profile_id for p in profiles])
        items = []
        for p in profiles:
            b = snaps.get(p.profile_id)
            ledger = None if b is None else {
                **{f: getattr(b, f) for f in b.__struct_fields__}, "available": b.available}
            items.append({"profile_id": p.profile_id, "currency": p.currency,
                          "account_id": p.account_id, "risk_profile": p.risk_profile,
                          "state": p.state, "state_reason": p.state_reason,
                          "ledger": ledger})
        return {"profiles": items, "next_cursor": profiles[-1].profile_id if more else None}

    ctx.run_blocking(work, done)


def op_profile_set_state(ctx: OpContext, a: SetStateArgs, caller: Caller, done: Done) -> None:
    caller.check(a.profile_id)
    # blocking: a halt is answered once the profile's working entries are canceled
    ctx.run_blocking(lambda: profile_map(ctx.system.set_state(
        a.profile_id, a.state, a.reason, caller.name)), done)


def op_ledger_get(ctx: OpContext, a: ProfileArgs, caller: Caller, done: Done) -> None:
    caller.check(a.profile_id)
    _submit(ctx, a.profile_id, m.GetLedger(), done, lambda out: ledger_map(out.result))


def _transfer(cls) -> Callable:
    def op(ctx: OpContext, a: TransferArgs, caller: Caller, done: Done) -> None:
        caller.check(a.profile_id)
        pid = a.profile_id

        def then_ledger(out):
            t = out.result
            extra = {"transfer_id": t.transfer_id, "reused": out.reused}
            _submit(ctx, pid, m.GetLedger(), done,
                    lambda led: {**ledger_map(led.result), **extra})
            return _PENDING

        cmd = cls(amount=a.amount, client_request_id=a.client_request_id,
                  cause=a.client_request_id)
        ctx.system.transfer(pid, cmd, _then(_chain(done), then_ledger))

    return op


def op_quote(ctx: OpContext, a: QuoteArgs, caller: Caller, done: Done) -> None:
    caller.check(a.profile_id)
    if a.price_hint is not None:
        parse_decimal(a.price_hint, "price_hint")  # accepted, but not any string
    ctx.system.allocation.quote(a.profile_id, a.symbol,
                                _then(done, lambda decision: decision.to_map()))


def op_reserve(ctx: OpContext, a: ReserveArgs, caller: Caller, done: Done) -> None:
    caller.check(a.profile_id)
    ctx.system.allocation.reserve(
        a.profile_id, a.symbol, a.amount, a.client_request_id, a.ttl_s,
        _then(done, lambda out: reservation_map(out.result, out.reused)))


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
    _submit(ctx, a.profile_id, cmd, done,
            lambda out: {"released": True, "reservation_id": out.result.reservation_id,
                         "amount": out.result.amount})


_PENDING = object()


def _chain(done: Done) -> Done:
    """A `done` for a first step whose success starts a second step (which answers)."""

    def chained(result: Any = None, error: WireError | None = None) -> None:
        if error is not None or result is not _PENDING:
            done(result, error=error)

    return chained


#: op name -> (argument schema, handler)
OPS: dict[str, tuple[type[Args], Callable]] = {
    "system.health": (NoArgs, op_health),
    "system.metrics": (NoArgs, op_metrics),
    "profile.create": (ProfileCreateArgs, op_profile_create),
    "profile.get": (ProfileArgs, op_profile_get),
    "profile.list": (ProfileListArgs, op_profile_list),
    "profile.set_state": (SetStateArgs, op_profile_set_state),
    "ledger.get": (ProfileArgs, op_ledger_get),
    "ledger.deposit": (TransferArgs, _transfer(m.Deposit)),
    "ledger.withdraw": (TransferArgs, _transfer(m.Withdraw)),
    "allocation.quote": (QuoteArgs, op_quote),
    "allocation.reserve": (ReserveArgs, op_reserve),
    "allocation.release": (ReleaseArgs, op_release),
    "liquidity.set": (LiquiditySetArgs, op_liquidity_set),
}

# the trading ops live in their own module, which builds on the pieces above (import
# protocol.ops, never protocol.trading_ops directly)
from capflow.protocol.trading_ops import TRADING_OPS  # noqa: E402

OPS.update(TRADING_OPS)
from capflow.protocol.risk_ops import RISK_OPS  # noqa: E402

OPS.update(RISK_OPS)

_FIELD = re.compile(r"`\$\.([A-Za-z_][A-Za-z0-9_]*)|field `([^`]+)`")


def parse_args(schema: type[Args], args: dict[str, Any]) -> Args:
    fields = schema.__struct_fields__
    unknown = [name for name in args if name not in fields]
    if unknown:  # named from the request itself (quoted: it may be of any length)
        name = quote(min(unknown))
        raise WireError("INVALID_ARGUMENT", f"unknown argument {name!r}", {"field": name})
    try:
        return msgspec.convert(args, schema, strict=True)
    except msgspec.ValidationError as exc:
        # msgspec's text may quote the value ("Invalid enum value '...'"): keep its
        # start, and say where from the field name, which is ours
        text, _, _ = str(exc).partition(" - at `")
        match = _FIELD.search(str(exc))
        field = (match.group(1) or match.group(2)) if match else None
        where = f" - at `$.{field}`" if field else ""
        raise WireError("INVALID_ARGUMENT", quote(text) + where, {"field": field}) from None


def close_ops(op: str, limit: int = 3) -> list[str]:
    """At most `limit` ops whose names are close to a name that is none: a typo
    (``ledger.gett`` -> ``["ledger.get"]``) or a noun alone (``stats`` ->
    ``["stats.get"]``); none for a name longer than any op could be."""
    if not isinstance(op, str) or not op or len(op) > 64:
        return []
    nouns = [name for name in OPS if name.startswith(f"{op}.")]
    close = difflib.get_close_matches(op, OPS, n=limit, cutoff=0.75)
    return list(dict.fromkeys(nouns + close))[:limit]


def dispatch(ctx: OpContext, op: str, args: dict[str, Any], caller: Caller,
             done: Done) -> None:
    """Run one op; every path ends in exactly one call of `done`."""
    entry = OPS.get(op)
    if entry is None:
        name = quote(op)
        raise WireError("UNKNOWN_OP", f"no such op: {name!r}",
                        {"op": name, "did_you_mean": close_ops(op)})
    schema, handler = entry
    if caller.profiles is not None and "profile_id" in schema.__struct_fields__:
        # a key may not make the server look at arguments for a profile it may not
        # touch: refused before they are read (a valid id only; any other value is
        # refused by the schema)
        pid = args.get("profile_id")
        if type(pid) is str and 0 < len(pid) <= ID_MAX:
            caller.check(pid)
    handler(ctx, parse_args(schema, args), caller, done)


def health(system, started: float, environment: str, curve: bool) -> dict[str, Any]:
    from capflow.storage.engine import describe

    cfg = system.config
    fenced = system.fenced
    reasons = system.trading.safety.reasons() if system.trading is not None else []
    status = ("stopping" if system.started_at is None else "fenced" if fenced
              else "degraded" if reasons else "ok")
    return {"status": status,
            "version": _version(), "protocol": VERSION, "environment": environment,
            "broker_mode": _broker_mode(cfg), "oms_enabled": cfg.oms.enabled,
            "storage": describe(cfg.storage.url) if cfg.storage.durable else "memory",
            "uptime_s": round(time.monotonic() - started, 3),
            "profiles": system.registry.known_count(), "security": "curve" if curve else "plain",
            "trading_state": system.global_state.state, "fenced": fenced,
            "reasons": ([fenced] if fenced else []) + reasons}


#: the paper broker, by its name and by the name of before capflow was one package
PAPER_ADAPTERS = frozenset({"capflow.brokers.paper:PaperBroker", "brokers.paper:PaperBroker"})


def _broker_mode(cfg) -> str:
    adapters = {a.adapter for a in cfg.brokers.accounts.values()}
    return "paper" if adapters <= PAPER_ADAPTERS else "live"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("capflow")
    except Exception:
        return "0+unknown"
