"""The sizing policy of an entry beyond a limit: refuse it (the default), or shrink it
to the largest quantity every size-bound limit allows.

A signal says ``sizing = "shrink"`` (or its risk profile does, ``sizing`` in its limits;
the signal's own choice wins). Its quantity is then lowered, in steps of the instrument's
lot (the venue's `qty_step`, else its quantity places), to the largest one whose order
passes the checks that grow with size: free capital, `max_notional`,
`max_risk_per_trade_pct`, `max_exposure` / `max_leverage`, the account's gross exposure
and the allocation's concentration limits. Each of those only gets harder as the
quantity grows, so the largest fit is found by bisection over the lots, with the very
checks the order then meets: the reservation is that of the shrunk order, exactly.

A shrink goes no lower than the instrument's minimum: the venue's minimum quantity and
notional where the account has venue rules, else the profile's `min_qty` and
`min_notional`. Below it, or when a check that size does not change fails (the trading
state, a breaker, a protection, the order rate, a symbol list, a position count), the
entry is refused as before. The answer shows the shrink (`Shrink.to_map`).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec

from capflow.actors.model.money import ZERO, quant
from capflow.actors.model.orders import Signal, SignalPolicy
from capflow.actors.model.risk import Check
from capflow.actors.model.venue import apply_rule

SIZINGS = ("refuse", "shrink")
#: the checks a smaller order can pass (their prefix, for the concentration limits)
SIZE_BOUND = ("capital", "max_notional", "max_risk_per_trade", "max_exposure",
              "account_gross_exposure", "concentration_")


def size_bound(check: Check) -> bool:
    return check.check.startswith(SIZE_BOUND)


class Shrink(msgspec.Struct, frozen=True):
    """How an entry was shrunk: from `requested_qty` to `granted_qty` (None: not even
    the minimum fits, and the entry is refused), bound by the check `bound_by` (its
    reason code `code` and limit)."""

    requested_qty: Decimal
    granted_qty: Decimal | None
    bound_by: str
    code: str
    limit: Any
    #: the smallest quantity the instrument takes (None: one lot)
    min_qty: Decimal | None = None

    def to_map(self) -> dict[str, Any]:
        return {"requested_qty": self.requested_qty, "granted_qty": self.granted_qty,
                "bound_by": self.bound_by, "code": self.code, "limit": self.limit,
                "min_qty": self.min_qty}


def largest_fit(qty: Decimal, step: Decimal, fits: Callable[[Decimal], bool]) -> Decimal:
    """The largest multiple of `step` below `qty` for which `fits` holds (`fits` is true
    up to some quantity and false beyond it); zero when none does."""
    lo, hi = 0, int(qty / step)
    if hi * step >= qty:
        hi -= 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid * step):
            lo = mid
        else:
            hi = mid - 1
    return (lo * step).quantize(step) if lo else ZERO


def sizing_of(signal: Signal, limits: Any) -> str:
    return signal.sizing or limits.sizing or "refuse"


def shrink(qty: Decimal, signal: Signal, policy: SignalPolicy, limits: Any,
           failing: Callable[[Decimal], list[Check]],
           reference: Decimal) -> tuple[Decimal, Shrink | None]:
    """(quantity, shrink) of an entry of `qty` under the sizing policy. `failing(q)` is
    the checks an order of `q` fails; `reference` the price its capital is reserved at.
    Unchanged (and no shrink) when it fits, when the policy is to refuse, or when a
    failed check is one size does not change."""
    if sizing_of(signal, limits) != "shrink" or qty <= 0:
        return qty, None
    failed = failing(qty)
    if not failed or not all(size_bound(c) for c in failed):
        return qty, None
    venue = policy.venue
    step = venue.qty_step if venue is not None and venue.qty_step > 0 else quant(
        policy.qty_places)
    granted = largest_fit(qty, step, lambda q: not any(size_bound(c) for c in failing(q)))
    above = granted + step if granted + step < qty else qty
    # the check the next lot up fails (the first size-bound failure at `qty` if none)
    bound = next((c for c in failing(above) if size_bound(c)), failed[0])
    minimum = limits.min_qty
    if venue is not None:
        minimum = max(venue.min_qty, venue.qty_step)
    if granted <= 0 or (minimum is not None and granted < minimum) or (
            venue is not None and not isinstance(
                apply_rule(signal.side, granted, None, reference, venue), tuple)) or any(
            c.check == "min_notional" for c in failing(granted)):
        return qty, Shrink(qty, None, bound.check, bound.code, bound.limit, minimum)
    return granted, Shrink(qty, granted, bound.check, bound.code, bound.limit, minimum)
