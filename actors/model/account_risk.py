"""`AccountRisk`: the limits across all the profiles of one broker account, the pure part.

No I/O and no threads: its account manager owns one and is the only one to touch it.

- **Open position slots** (`max_open_positions`, `max_open_positions_per_symbol`): an
  entry claims a slot before its ledger decides it; a recorded order takes the claim
  over; the slot is freed when its position closes or the order ends without a fill.
- **Figures the profiles report** after fills and on the price ticks of what they hold
  (risk marked to market): each profile's PnL (``equity - allocated``: realized PnL,
  fees and unrealized PnL, unmoved by deposits and withdrawals) and gross exposure.
- **Loss limits**: the loss of all the profiles together since the start of the day (in
  the risk time zone; each profile's reference is its PnL when the day began) reaching
  `daily_loss_limit`, or since they were created reaching `max_total_loss`, is a
  breach: the manager halts the account.
- **Gross exposure** (`max_gross_exposure`): the ledgers check an entry against the sum
  the others last reported (`exposure_of_others`), at most one report old.
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import date, datetime, tzinfo
from decimal import Decimal
from typing import Any

from capflow.actors.model.errors import Denial
from capflow.actors.model.limits import AccountRiskLimits
from capflow.actors.model.money import ZERO
from capflow.actors.model.risk import Check


class AccountRisk:
    def __init__(self, account_id: str, limits: AccountRiskLimits | None, tz: tzinfo, *,
                 pnl: dict[str, Decimal] | None = None,
                 saved: dict[str, Any] | None = None):
        self.account_id = account_id
        self.limits = limits or AccountRiskLimits()
        self.tz = tz
        self._ids = itertools.count(1)
        #: open position slots: position id -> symbol (entry orders hold the slot of the
        #: position they will open), and claims not yet settled
        self._slots: dict[str, str] = {}
        self._claims: dict[int, tuple[str, str]] = {}  # -> (profile, symbol)
        self._per_symbol: Counter[str] = Counter()
        #: each profile's last reported PnL and exposure (PnL seeded from the stored
        #: ledgers at start: realized PnL less fees)
        self.pnl: dict[str, Decimal] = dict(pnl or {})
        self.exposures: dict[str, Decimal] = {}
        self.exposure_total = ZERO
        self._pnl_total = sum(self.pnl.values(), ZERO)
        #: the total PnL the total loss is measured from (0: since the profiles were
        #: created; moved by `rebase` when a person resumes a halted account)
        self.total_base = ZERO
        #: the day the daily loss is measured over, and each profile's PnL at its start
        self.day: date | None = None
        self.baseline: dict[str, Decimal] = {}
        self._day_loss = ZERO
        if saved:
            self.day = date.fromisoformat(saved["day"]) if saved.get("day") else None
            self.baseline = {k: Decimal(v) for k, v in saved.get("baseline", {}).items()}
            self._day_loss = sum((b - self.pnl.get(p, b) for p, b in self.baseline.items()),
                                 ZERO)
            self.total_base = Decimal(saved.get("total_base", "0"))

    # -- open position slots ------------------------------------------------------------

    @property
    def slot_symbols(self) -> int:
        return len(self._per_symbol)

    def hold_slot(self, position_id: str, symbol: str) -> None:
        if position_id not in self._slots:
            self._slots[position_id] = symbol
            self._per_symbol[symbol] += 1

    def slot_checks(self, symbol: str) -> list[Check]:
        lim = self.limits
        out = []
        if lim.max_open_positions is not None:
            n = len(self._slots) + len(self._claims) + 1
            out.append(Check("account_max_open_positions", "MAX_OPEN_POSITIONS",
                             n <= lim.max_open_positions, lim.max_open_positions, n,
                             lim.max_open_positions - n))
        if lim.max_open_positions_per_symbol is not None:
            n = self._per_symbol.get(symbol, 0) + 1
            out.append(Check("account_max_open_positions_per_symbol",
                             "MAX_OPEN_POSITIONS_PER_SYMBOL",
                             n <= lim.max_open_positions_per_symbol,
                             lim.max_open_positions_per_symbol, n,
                             lim.max_open_positions_per_symbol - n))
        return out

    def claim_slot(self, profile_id: str, symbol: str) -> int | Denial:
        """A claim id, or the denial of a full account."""
        for c in self.slot_checks(symbol):
            if not c.ok:
                return Denial("RISK_REJECTED", f"broker account {self.account_id!r}: "
                                               f"{c.check} {c.value} over the limit {c.limit}",
                              {"reason": c.code, "limit": c.limit, "value": c.value,
                               "check": c.check, "scope": "account",
                               "account_id": self.account_id})
        claim = next(self._ids)
        self._claims[claim] = (profile_id, symbol)
        self._per_symbol[symbol] += 1
        return claim

    def end_claim_for(self, profile_id: str, symbol: str) -> None:
        """A recorded order takes over a claim of its profile and symbol (claims of one
        profile and symbol are interchangeable), so it never counts as both a slot and
        a claim; the claim's own settlement then finds it gone."""
        for claim, owner in self._claims.items():
            if owner == (profile_id, symbol):
                del self._claims[claim]
                self._drop_from(symbol)
                return

    def settle_slot(self, claim_id: int) -> None:
        owner = self._claims.pop(claim_id, None)
        if owner is not None:
            self._drop_from(owner[1])

    def slot_freed(self, position_id: str) -> None:
        symbol = self._slots.pop(position_id, None)
        if symbol is not None:
            self._drop_from(symbol)

    def _drop_from(self, symbol: str) -> None:
        """One slot of `symbol` fewer; a symbol with none left is forgotten (a claim for
        a symbol that never traded must not leave a key behind)."""
        left = self._per_symbol[symbol] - 1
        if left > 0:
            self._per_symbol[symbol] = left
        else:
            del self._per_symbol[symbol]

    # -- what the profiles report -----------------------------------------------------

    def exposure_of_others(self, profile_id: str) -> Decimal:
        return self.exposure_total - self.exposures.get(profile_id, ZERO)

    def report(self, profile_id: str, pnl: Decimal, exposure: Decimal,
               ts: datetime) -> bool:
        """Take a profile's figures; True when the daily references changed (a new day,
        or a profile new today): they are to be stored.

        A day's reference of a profile is its PnL when the day began: the last one known
        then (reported, or seeded from its ledger at start); a profile first seen during
        the day started it at 0 (a new profile's PnL)."""
        changed = False
        today = ts.astimezone(self.tz).date()
        if today != self.day:
            self.day, self.baseline, self._day_loss = today, dict(self.pnl), ZERO
            changed = True
        prev = self.pnl.get(profile_id, ZERO)
        if profile_id not in self.baseline:
            self.baseline[profile_id] = ZERO
            self._day_loss -= prev
            changed = True
        self._day_loss += prev - pnl
        self._pnl_total += pnl - prev
        self.pnl[profile_id] = pnl
        self.exposure_total += exposure - self.exposures.get(profile_id, ZERO)
        self.exposures[profile_id] = exposure
        return changed

    @property
    def day_loss(self) -> Decimal:
        return self._day_loss

    @property
    def total_loss(self) -> Decimal:
        return self.total_base - self._pnl_total

    def rebase(self) -> None:
        """A person resumed the account after its loss limits halted it: the losses
        count again from here (the day's and the total), as `risk.reset` restarts a
        profile's breakers at its equity of that moment."""
        self.baseline = dict(self.pnl)
        self._day_loss = ZERO
        self.total_base = self._pnl_total

    def breach(self) -> str | None:
        """The loss limit crossed now, as a reason, or None."""
        lim = self.limits
        if lim.daily_loss_limit is not None and self._day_loss >= lim.daily_loss_limit:
            return (f"DAILY_LOSS_LIMIT: the account's profiles lost {self._day_loss} today, "
                    f"the limit is {lim.daily_loss_limit}")
        if lim.max_total_loss is not None and self.total_loss >= lim.max_total_loss:
            return (f"MAX_TOTAL_LOSS: the account's profiles lost {self.total_loss} in all, "
                    f"the limit is {lim.max_total_loss}")
        return None

    def saved(self) -> dict[str, Any]:
        """What survives a restart (the PnL is seeded from the ledgers again)."""
        return {"day": self.day.isoformat() if self.day else None,
                "baseline": {p: str(v) for p, v in self.baseline.items()},
                "total_base": str(self.total_base)}
