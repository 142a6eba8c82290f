"""What the tests of a capflow on the ccxt adapter share: the account section that points
the adapter at the Bybit emulator (the `venue` and `venue_keys` fixtures of conftest.py),
and a wait."""

from __future__ import annotations

import time

from capflow.bench.venues.bybit import BybitVenue

KEY_ENV, SECRET_ENV = "T_BYBIT_KEY", "T_BYBIT_SECRET"
ADAPTER = "capflow.brokers.ccxt_venue:CcxtSpotBroker"


def live_brokers(venue: BybitVenue, *, symbols: dict[str, str] | None = None,
                 **settings) -> dict:
    """The [brokers] section of one live account, "live", on `venue` (10,000 USDT)."""
    account = {"adapter": ADAPTER, "currency": "USDT", "initial_cash": "10000",
               "settings": {"exchange": "bybit", "api_key_env": KEY_ENV,
                            "api_secret_env": SECRET_ENV, "urls": venue.urls,
                            "timeout_s": 1, "poll_interval_s": 0.05, **settings}}
    if symbols is not None:
        account["symbols"] = symbols
    return {"default_account": "live", "accounts": {"live": account}}


def wait(cond, timeout: float = 10.0):
    """`cond()`'s first true value, polled; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)
    return got


def connected(cf):
    wait(lambda: cf.trading.accounts.status["live"].state == "CONNECTED")
    return cf
