"""The `[brokers]` section: the broker accounts, their adapters and how they
connect."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec


class ConnectConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Reconnection: exponential backoff with jitter, then give up."""

    max_attempts: int = 8
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    #: each delay is multiplied by a random factor in [1 - jitter, 1 + jitter]
    jitter: float = 0.2


class AccountConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One broker account, served by one account manager hosting one adapter."""

    #: "module:Class" of the adapter (a `capflow.brokers.base.BrokerAdapter`)
    adapter: str = "capflow.brokers.paper:PaperBroker"
    currency: str = "USDT"
    #: the account's cash at the start (paper)
    initial_cash: Decimal = Decimal("1000000")
    #: the most all the account's profiles together may be allocated, in the account's
    #: currency, whatever the broker's balance says (a semi-live account's hard cap,
    #: e.g. 100); None: the account's cash is the only cap
    max_live_capital: Decimal | None = None
    #: capflow symbol -> the broker's symbol, where they differ
    symbols: dict[str, str] = msgspec.field(default_factory=dict)
    connect: ConnectConfig = msgspec.field(default_factory=ConnectConfig)
    #: adapter-specific settings (the paper broker: taker_fee, maker_fee, slippage_bps)
    settings: dict[str, Any] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        cap = self.max_live_capital
        if cap is not None and not (cap.is_finite() and cap >= 0):
            raise ValueError(f"max_live_capital must be a number >= 0, not {cap}")
        targets = list(self.symbols.values())
        if twice := sorted({t for t in targets if targets.count(t) > 1}):
            raise ValueError(f"symbols maps two capflow symbols to one broker symbol: "
                             f"{', '.join(twice)}")


def _default_accounts() -> dict[str, AccountConfig]:
    return {"paper": AccountConfig()}


class BrokerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: account of a profile created without one
    default_account: str = "paper"
    accounts: dict[str, AccountConfig] = msgspec.field(default_factory=_default_accounts)


#: what `broker_mode` (``BROKER_MODE``) may say
BROKER_MODES = ("paper", "live")
