"""A Bitget v2 spot venue on 127.0.0.1 that the real ccxt library talks to.

The same book, matching, faults and request record as the Bybit emulator (``BybitVenue``,
whose fixture API this class keeps: prices, balances, ``fill``, ``auto_match``,
``defer_cancels``, ``fault``, ``requests`` ...; see bench/venues/bybit.py), behind
Bitget's v2 REST API for a classic (not unified) spot account, as ccxt 4.5's ``bitget``
class calls it. Shapes: bitget_shapes.py (Bitget's v2 spot documents at
https://www.bitget.com/api-doc/spot/ and the sample answers in ccxt's bitget.py).

``BitgetVenue(api_key="venue-key", secret="venue-secret", passphrase="venue-pass",
balances={"USDT": "10000"}, instruments=None)``; ``venue.ccxt(**config)`` gives a
``ccxt.bitget`` on it (classic account: ``options.uta`` False, spot markets only).
``order(link_id=...)`` finds an order by its ``clientOid``.

Which ccxt (4.5) call asks what, spot, classic account:
- load_markets: GET /api/v2/spot/public/coins (fetch_currencies),
  /api/v2/spot/public/symbols and /api/v2/margin/currencies (answered empty: no margin);
- fetch_time: /api/v2/public/time; fetch_ticker(s): /api/v2/spot/market/tickers;
- fetch_balance: /api/v2/spot/account/assets;
- create_order: POST /api/v2/spot/trade/place-order (``size`` is the quote amount for a
  MARKET BUY, which ccxt computes as amount x price);
- cancel_order: POST /api/v2/spot/trade/cancel-order (by orderId or clientOid);
- fetch_order: /api/v2/spot/trade/orderInfo (by orderId or clientOid, any state);
- fetch_open_orders: /api/v2/spot/trade/unfilled-orders;
- fetch_closed_orders / fetch_canceled_and_closed_orders:
  /api/v2/spot/trade/history-orders;
- fetch_my_trades: /api/v2/spot/trade/fills (a symbol is required; orderId narrows it).
  ccxt has no fetch_order_trades for Bitget.
Lists are newest first, ``limit`` (at most 100) a page, ``idLessThan`` the cursor.

Signing as Bitget documents it: ACCESS-SIGN = base64 HMAC-SHA256 (secret) of
ACCESS-TIMESTAMP + method + path (+ "?" + the query of a GET) + the body of a POST, with
ACCESS-KEY and ACCESS-PASSPHRASE; an unknown key answers 40037, a wrong passphrase 40012,
a wrong signature 40009, a timestamp more than 30 s off 40008. Errors are
``{"code": "43012", "msg": ..., "requestTime": ..., "data": null}``, HTTP 400 as Bitget
sends them: insufficient balance 43012 (ccxt InsufficientFunds), unknown order 43001
(OrderNotFound), below the minimum 45110 and bad scale 40808 (InvalidOrder), a clientOid
used before 43122 "Duplicate clientOid" (the code is this emulator's choice: the documents
do not list it; ccxt raises a plain ExchangeError), rate limit 429 (ccxt DDoSProtection,
a NetworkError). ``clientOid``: at most 50 characters (Bitget's error 40305).

Fees: Bitget spot charges a BUY's fee in the coin received (the base coin), a SELL's in
the quote coin, unless BGB deduction is switched on (not emulated); base rate 0.1 %.
Not emulated: the unified (UTA, /api/v3) account, plan (trigger) orders, margin, batch
endpoints, WebSocket streams.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import unquote

from .bitget_shapes import (
    asset_row,
    coin_rows,
    fill_row,
    order_row,
    symbol_row,
    ticker_row,
)
from .bybit import BybitVenue
from .bybit_book import Instrument, Order, VenueError
from .bybit_http import Recorded

__all__ = ["BitgetVenue"]

#: the Bybit codes the shared book raises -> Bitget's (code, message)
CODES = {
    10001: ("40019", None), 10006: ("429", "Too Many Requests"),
    170121: ("40034", "Parameter symbol does not exist"),
    170131: ("43012", "Insufficient balance"),
    170213: ("43001", "The order does not exist"),
    170141: ("43122", "Duplicate clientOid"),
    170134: ("40808", "Parameter verification exception price checkBDScale error"),
    170137: ("40808", "Parameter verification exception size checkBDScale error"),
    170135: ("40808", "Parameter verification exception size more than the maximum"),
    170136: ("45110", "less than the minimum amount"),
    170140: ("45110", "less than the minimum amount 1 USDT"),
}
SIDES = {"buy": "Buy", "sell": "Sell"}
TYPES = {"limit": "Limit", "market": "Market"}
FORCES = {"gtc": "GTC", "ioc": "IOC", "fok": "FOK", "post_only": "PostOnly"}


class BitgetVenue(BybitVenue):
    """The emulated Bitget venue: an HTTP server on 127.0.0.1 and the shared book."""

    def __init__(self, api_key: str = "venue-key", secret: str = "venue-secret",
                 passphrase: str = "venue-pass", *, balances: dict | None = None,
                 instruments: list[Instrument] | None = None):
        super().__init__(api_key, secret, balances=balances, instruments=instruments)
        self.passphrase = passphrase
        self.book.max_link = 50

    @property
    def urls(self) -> dict[str, str]:
        return {name: self.url for name in ("spot", "mix", "user", "p2p", "broker", "margin",
                                             "common", "tax", "convert", "copy", "earn",
                                             "uta", "public", "private")}

    def ccxt(self, **config):
        """A ccxt.bitget client on this venue: classic account, spot only, its key."""
        import ccxt

        options = {"defaultType": "spot", "uta": False, "fetchMarkets": {"types": ["spot"]},
                   **config.pop("options", {})}
        client = ccxt.bitget({"apiKey": self.api_key, "secret": self.secret,
                              "password": self.passphrase, "enableRateLimit": False,
                              "timeout": 3000, "options": options, **config})
        client.urls["api"] = dict(self.urls)
        return client

    # -- answering ---------------------------------------------------------------------
    OK = "success"

    def refusal(self, exc: VenueError) -> tuple[int, dict]:
        """Bitget answers a refusal with an HTTP error status and its code."""
        answer = self.envelope(exc.ret_code, exc.ret_msg, None)
        return (429 if answer["code"] == "429" else 400), answer

    def envelope(self, code: int, msg: str, result) -> dict:
        if code == 0:
            return {"code": "00000", "msg": "success", "requestTime": self.now_ms(),
                    "data": result}
        mapped, text = CODES.get(code, (str(code), None))
        return {"code": mapped, "msg": text or msg, "requestTime": self.now_ms(),
                "data": None}

    @staticmethod
    def code_of(answer: dict):
        return answer["code"]

    def _authenticate(self, rec: Recorded):
        if rec.header("ACCESS-KEY") != self.api_key:
            raise VenueError(40037, "Apikey does not exist")
        if rec.header("ACCESS-PASSPHRASE") != self.passphrase:
            raise VenueError(40012, "apikey/password is incorrect")
        stamp = rec.header("ACCESS-TIMESTAMP") or ""
        payload = stamp + rec.method + rec.path
        if rec.method == "POST":
            payload += rec.raw_body
        elif rec.raw_query:
            payload += "?" + unquote(rec.raw_query)
        want = base64.b64encode(hmac.new(self.secret.encode(), payload.encode(),
                                         hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(want, rec.header("ACCESS-SIGN") or ""):
            raise VenueError(40009, "sign signature error")
        try:
            stamp_ms = int(stamp)
        except ValueError:
            raise VenueError(40008, "Request timestamp expired") from None
        if abs(self.now_ms() - stamp_ms) > 30_000:
            raise VenueError(40008, "Request timestamp expired")

    # -- endpoints (called under the lock) ---------------------------------------------
    def _time(self, params):
        return {"serverTime": str(self.now_ms())}

    def _symbols(self, params):
        return [symbol_row(i, self.book.fee_taker) for i in self.book.instruments.values()
                if params.get("symbol") in (None, i.symbol)]

    def _margin_currencies(self, params):
        return []

    def _coins(self, params):
        coins = {c for i in self.book.instruments.values() for c in (i.base, i.quote)}
        return coin_rows(sorted(coins))

    def _tickers(self, params):
        quotes = self._frozen if self._frozen is not None else self.book.quotes
        symbol = params.get("symbol")
        if symbol is not None and symbol not in self.book.instruments:
            raise VenueError(170121, "Parameter symbol does not exist")
        now = self.now_ms()
        return [ticker_row(s, q, now) for s, q in quotes.items() if symbol in (None, s)]

    def _assets(self, params):
        coin = params.get("coin")
        now = self.now_ms()
        return [asset_row(c, b, now) for c, b in sorted(self.book.balances.items())
                if coin in (None, c)]

    def _place(self, params):
        side = SIDES.get(str(params.get("side")))
        otype = TYPES.get(str(params.get("orderType")))
        force = FORCES.get(str(params.get("force") or "gtc").lower())
        if side is None or otype is None or force is None:
            raise VenueError(10001, "Parameter side, orderType or force error")
        req = {"category": "spot", "symbol": params.get("symbol"), "side": side,
               "orderType": otype, "qty": params.get("size"), "timeInForce": force,
               "orderLinkId": params.get("clientOid") or ""}
        if otype == "Limit":
            req["price"] = params.get("price")
        else:
            req["marketUnit"] = "quoteCoin" if side == "Buy" else "baseCoin"
        link = str(req["orderLinkId"])
        if len(link) > 50:
            raise VenueError(10001, "Client_oid length is not greater than 50")
        order = self.book.create(req)
        return {"orderId": order.order_id, "clientOid": order.link_id}

    def _lookup(self, params) -> Order | None:
        order_id, link = params.get("orderId"), params.get("clientOid")
        if not order_id and not link:
            raise VenueError(10001, "Parameter orderId or clientOid cannot be empty")
        return self.book.find(order_id, link)

    def _cancel(self, params):
        order = self._lookup(params)
        if order is None or order.symbol != params.get("symbol"):
            raise VenueError(170213, "The order does not exist")
        self.book.cancel(order)
        return {"orderId": order.order_id, "clientOid": order.link_id}

    def _order_info(self, params):
        order = self._lookup(params)
        return [order_row(order)] if order is not None else []

    def _unfilled(self, params):
        orders = [o for o in self.book.orders.values() if o.is_open]
        return self._list(params, orders, lambda o: o.created, lambda o: o.order_id,
                          order_row)

    def _history(self, params):
        orders = [o for o in self.book.orders.values() if not o.is_open]
        return self._list(params, orders, lambda o: o.created, lambda o: o.order_id,
                          order_row)

    def _fills(self, params):
        if not params.get("symbol"):
            raise VenueError(10001, "Parameter symbol cannot be empty")
        execs = [e for e in self.book.executions
                 if params.get("orderId") in (None, e.order.order_id)]
        return self._list(params, execs, lambda e: e.time, lambda e: e.exec_id, fill_row,
                          symbol_of=lambda e: e.order.symbol)

    def _list(self, params, items: list, stamp, ident, row, symbol_of=None) -> list:
        """Newest first, ``limit`` (at most 100) of them, older than ``idLessThan``."""
        symbol_of = symbol_of or (lambda o: o.symbol)
        try:
            limit = min(int(params.get("limit", 100)), 100)
            below = int(params.get("idLessThan") or 2**63)
            start = int(params.get("startTime", 0))
            end = int(params.get("endTime", 2**62))
        except ValueError:
            raise VenueError(10001, "Parameter limit, idLessThan or time error") from None
        chosen = [x for x in reversed(items)
                  if params.get("symbol") in (None, symbol_of(x))
                  and int(ident(x)) < below and start <= stamp(x) <= end]
        return [row(x) for x in chosen[:limit]]


#: (method, path) -> (signed?, handler)
ROUTES = {
    ("GET", "/api/v2/public/time"): (False, BitgetVenue._time),
    ("GET", "/api/v2/spot/public/symbols"): (False, BitgetVenue._symbols),
    ("GET", "/api/v2/spot/public/coins"): (False, BitgetVenue._coins),
    ("GET", "/api/v2/margin/currencies"): (False, BitgetVenue._margin_currencies),
    ("GET", "/api/v2/spot/market/tickers"): (False, BitgetVenue._tickers),
    ("GET", "/api/v2/spot/account/assets"): (True, BitgetVenue._assets),
    ("POST", "/api/v2/spot/trade/place-order"): (True, BitgetVenue._place),
    ("POST", "/api/v2/spot/trade/cancel-order"): (True, BitgetVenue._cancel),
    ("GET", "/api/v2/spot/trade/orderInfo"): (True, BitgetVenue._order_info),
    ("GET", "/api/v2/spot/trade/unfilled-orders"): (True, BitgetVenue._unfilled),
    ("GET", "/api/v2/spot/trade/history-orders"): (True, BitgetVenue._history),
    ("GET", "/api/v2/spot/trade/fills"): (True, BitgetVenue._fills),
}

BitgetVenue.routes = ROUTES
