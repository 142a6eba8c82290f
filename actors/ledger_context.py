"""`LedgerContext`: what every `LedgerActor` (`actors.ledger_actor`) needs from the rest of
capflow, built once by the System: its storage and journal, the bus and the clock, and
the views of the allocation, risk and accounts its checks read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from capflow.actors.model.journal import Journal


@dataclass(frozen=True)
class LedgerContext:
    """What every LedgerActor needs, built once by the System."""

    store: Any  # storage.ledger_store.LedgerStore
    journal: Journal  # what the actor writes, and when it is committed
    bus: Any  # capflow.actors.bus.EventBus
    clock: Any
    schedule_expiry: Any  # (profile_id, when) -> None
    default_ttl_s: int
    ids: Any  # () -> str, new server-made ids
    flush_timeout_s: float = 30.0
    #: the allocation formula's constants, instrument metadata, and market prices
    allocation: Any = None  # AllocationConfig
    instruments: Any = None  # capflow.actors.model.allocation.Instruments
    mark: Any = lambda symbol: None  # (symbol) -> Decimal | None
    #: (profile_id, risk_profile) -> RiskLimits; the time zone of the loss periods; the
    #: global kill switch, () -> an object with state, reason, changed_by (or None)
    risk_limits: Any = None
    risk_tz: Any = None
    global_state: Any = lambda: None
    #: the account of a profile created without one; (account_id) -> the account's
    #: trading state (or None) and its account-wide limits (AccountRiskLimits or None)
    default_account: str | None = None
    account_state: Any = lambda account_id: None
    account_limits: Any = lambda account_id: None
    #: what the other profiles of an account expose, as last reported:
    #: (account_id, profile_id) -> Decimal (0 when nothing is known)
    account_exposure: Any = lambda account_id, profile_id: 0
    account_currency: Any = lambda account_id: None
    #: (profile_id, account_id, pnl, exposure, ts) -> None: tells the account's manager
    #: a profile's PnL (equity - allocated) and exposure, for the account-wide limits
    report_equity: Any = None
