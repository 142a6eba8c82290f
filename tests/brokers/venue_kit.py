"""What the tests of a capflow on the ccxt adapter share: the account section that points
the adapter at a venue emulator, Bybit or Bitget (the `venue` and `venue_keys` fixtures of
conftest.py, one run per venue), the venue's path of each kind of request, and a wait."""

from __future__ import annotations

import time

from capflow.bench.venues.bitget import BitgetVenue
from capflow.bench.venues.bybit import BybitVenue

KEY_ENV, SECRET_ENV = "T_BYBIT_KEY", "T_BYBIT_SECRET"
PASSPHRASE_ENV = "T_VENUE_PASSPHRASE"
ADAPTER = "capflow.brokers.ccxt_venue:CcxtSpotBroker"

#: the emulators the venue-neutral tests run on, by ccxt exchange id
VENUES = {"bybit": BybitVenue, "bitget": BitgetVenue}

#: each venue's path of a kind of request
PATHS = {
    "bybit": {"create": "/v5/order/create", "cancel": "/v5/order/cancel",
              "tickers": "/v5/market/tickers", "balance": "/v5/account/wallet-balance",
              "open": "/v5/order/realtime", "trades": "/v5/execution/list"},
    "bitget": {"create": "/api/v2/spot/trade/place-order",
               "cancel": "/api/v2/spot/trade/cancel-order",
               "tickers": "/api/v2/spot/market/tickers",
               "balance": "/api/v2/spot/account/assets",
               "open": "/api/v2/spot/trade/unfilled-orders",
               "trades": "/api/v2/spot/trade/fills"},
}


def exchange(venue: BybitVenue) -> str:
    return "bitget" if isinstance(venue, BitgetVenue) else "bybit"


def path(venue: BybitVenue, kind: str) -> str:
    return PATHS[exchange(venue)][kind]


def sent(venue: BybitVenue, kind: str) -> list:
    """The requests of one kind the venue received."""
    return venue.requests(path(venue, kind))


def sells(venue: BybitVenue) -> list:
    return [r for r in sent(venue, "create") if r.body["side"].lower() == "sell"]


def credentials(venue: BybitVenue) -> dict:
    """The settings naming the venue's credentials."""
    names = {"exchange": exchange(venue), "api_key_env": KEY_ENV,
             "api_secret_env": SECRET_ENV}
    if isinstance(venue, BitgetVenue):
        names["api_passphrase_env"] = PASSPHRASE_ENV
    return names


def live_brokers(venue: BybitVenue, *, symbols: dict[str, str] | None = None,
                 **settings) -> dict:
    """The [brokers] section of one live account, "live", on `venue` (10,000 USDT)."""
    account = {"adapter": ADAPTER, "currency": "USDT", "initial_cash": "10000",
               "settings": {**credentials(venue), "urls": venue.urls,
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


def order_sent(rec) -> dict:
    """An order request's fields in one shape, whichever venue received it: client_id,
    type and side (lower case), tif (upper case), price and qty (strings)."""
    b = rec.body
    if "category" in b:  # Bybit v5
        return {"client_id": b.get("orderLinkId"), "type": b["orderType"].lower(),
                "tif": str(b.get("timeInForce", "")).upper(), "side": b["side"].lower(),
                "price": b.get("price"), "qty": b.get("qty")}
    return {"client_id": b.get("clientOid"), "type": b["orderType"],
            "tif": str(b.get("force", "")).upper(), "side": b["side"],
            "price": b.get("price"), "qty": b.get("size")}
