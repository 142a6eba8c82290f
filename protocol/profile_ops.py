"""The profile and ledger ops: `profile.create`, `profile.get`, `profile.list`,
`profile.set_state`, `ledger.get`, `ledger.deposit`, `ledger.withdraw`. The rules of a
handler are protocol/opkit.py's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from msgspec import Meta

from capflow.actors.model import messages as m
from capflow.protocol.answers import ledger_map, profile_list_item, profile_map
from capflow.protocol.opkit import (
    PENDING,
    Amount,
    Args,
    Caller,
    Done,
    Id,
    Name,
    OpContext,
    OpTable,
    Text,
    chain,
    submit,
    then,
)


class ProfileArgs(Args, frozen=True):
    profile_id: Id


class ProfileCreateArgs(Args, frozen=True):
    profile_id: Id
    allocated: Amount
    risk_profile: Text | None = None
    account_id: Id | None = None
    currency: Name | None = None


class ProfileListArgs(Args, frozen=True):
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100
    cursor: Text | None = None


class SetStateArgs(Args, frozen=True):
    profile_id: Id
    state: Name
    reason: Text = ""


class TransferArgs(Args, frozen=True):
    profile_id: Id
    amount: Amount
    client_request_id: Id


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
    submit(ctx, a.profile_id, m.GetProfile(), done, lambda out: profile_map(out.result))


def op_profile_list(ctx: OpContext, a: ProfileListArgs, caller: Caller, done: Done) -> None:
    def work():
        store = ctx.system.store
        # one more than asked tells whether there is a next page
        found = store.list_profiles(a.cursor or "", a.limit + 1, only=caller.profiles)
        more = len(found) > a.limit
        profiles = found[:a.limit]
        snaps = store.snapshots([p.profile_id for p in profiles])
        items = [profile_list_item(p, snaps.get(p.profile_id)) for p in profiles]
        return {"profiles": items, "next_cursor": profiles[-1].profile_id if more else None}

    ctx.run_blocking(work, done)


def op_profile_set_state(ctx: OpContext, a: SetStateArgs, caller: Caller, done: Done) -> None:
    caller.check(a.profile_id)
    # blocking: a halt is answered once the profile's working entries are canceled
    ctx.run_blocking(lambda: profile_map(ctx.system.set_state(
        a.profile_id, a.state, a.reason, caller.name)), done)


def op_ledger_get(ctx: OpContext, a: ProfileArgs, caller: Caller, done: Done) -> None:
    caller.check(a.profile_id)
    submit(ctx, a.profile_id, m.GetLedger(), done, lambda out: ledger_map(out.result))


def _transfer(cls) -> Callable:
    def op(ctx: OpContext, a: TransferArgs, caller: Caller, done: Done) -> None:
        caller.check(a.profile_id)
        pid = a.profile_id

        def then_ledger(out):
            t = out.result
            extra = {"transfer_id": t.transfer_id, "reused": out.reused}
            submit(ctx, pid, m.GetLedger(), done,
                   lambda led: {**ledger_map(led.result), **extra})
            return PENDING

        cmd = cls(amount=a.amount, client_request_id=a.client_request_id,
                  cause=a.client_request_id)
        ctx.system.transfer(pid, cmd, then(chain(done), then_ledger))

    return op


PROFILE_OPS: OpTable = {
    "profile.create": (ProfileCreateArgs, op_profile_create),
    "profile.get": (ProfileArgs, op_profile_get),
    "profile.list": (ProfileListArgs, op_profile_list),
    "profile.set_state": (SetStateArgs, op_profile_set_state),
    "ledger.get": (ProfileArgs, op_ledger_get),
    "ledger.deposit": (TransferArgs, _transfer(m.Deposit)),
    "ledger.withdraw": (TransferArgs, _transfer(m.Withdraw)),
}
