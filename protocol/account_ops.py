"""The broker account ops: `account.get` (connection, venue balances, last reconcile,
data age, mode, capital) and `account.reconcile` (reconcile a live account with its
venue now; the report with both sides of every difference). The rules of a handler are
protocol/opkit.py's. (`account.set_state` is a kill switch: protocol/risk_ops.py.)"""

from __future__ import annotations

from capflow.protocol.codec import WireError
from capflow.protocol.opkit import Args, Caller, Done, Id, OpContext, OpTable


class AccountArgs(Args, frozen=True):
    account_id: Id


def _every_profile(caller: Caller, what: str) -> None:
    if caller.profiles is not None:
        raise WireError("FORBIDDEN", f"only a client allowed every profile ('*') may {what} "
                                     "a broker account", {})


def op_account_get(ctx: OpContext, a: AccountArgs, caller: Caller, done: Done) -> None:
    _every_profile(caller, "read")
    ctx.run_blocking(lambda: ctx.system.account_get(a.account_id), done)


def op_account_reconcile(ctx: OpContext, a: AccountArgs, caller: Caller,
                         done: Done) -> None:
    _every_profile(caller, "reconcile")
    ctx.run_blocking(lambda: ctx.system.account_reconcile(a.account_id), done)


ACCOUNT_OPS: OpTable = {
    "account.get": (AccountArgs, op_account_get),
    "account.reconcile": (AccountArgs, op_account_reconcile),
}
