"""A Bybit v5 spot venue on 127.0.0.1 that the real ccxt library talks to.

An in-process HTTP server (stdlib ``ThreadingHTTPServer``, a random port) speaking the part
of Bybit's v5 REST API that ccxt's ``bybit`` class uses for spot trading with a unified
account; the state and matching engine are in ``bybit_book.py``. ccxt signs the requests
and parses the answers with its own code, so a test exercises the same code paths as live
trading, with no internet.

Fixture API
-----------
``BybitVenue(api_key="venue-key", secret="venue-secret", balances={"USDT": "10000"},
instruments=None)``: ``start()`` / ``stop()``, or ``with BybitVenue() as venue:``; in
tests/venue the ``bybit_venue`` fixture (conftest.py) gives a started one, and
``bybit_client`` a ccxt client pointed at it; tests elsewhere import the class
(``from capflow.bench.venues.bybit import BybitVenue``) and use it as a context
manager; bench/venue.py measures the live adapter against it.
- ``venue.url``; ``venue.urls``: the entries of ccxt's ``exchange.urls["api"]`` to point at
  the venue (ccxt's v5 code reads "public" and "private"; "spot", "futures", "v2" are set
  too); ``venue.ccxt(**config)``: a ``ccxt.bybit`` ready to use (spot markets only, the
  venue's key, ``enableRateLimit`` off, ``timeout`` in ms overridable).
- Market: ``set_price(symbol, bid, ask, last=None, bid_size=None, ask_size=None)`` (a size
  caps what takers get there, and fills use it up); ``freeze_tickers()`` /
  ``thaw_tickers()``: the tickers endpoint keeps answering the prices of the moment it froze
  (stale data) while matching goes on at the prices set since.
- Account: ``set_balance(coin, total, hold=0)`` (``hold``: lock that much more, as the
  venue does for what is no order, a withdrawal say); ``balance(coin)`` -> ``Balance(total, locked,
  free)``; ``fee_taker`` / ``fee_maker`` (Decimal, default 0.001 = 0.1 %, Bybit's base spot
  rate; a BUY pays its fee in the base coin, a SELL in the quote coin); ``fee_coin =
  "MNT"``: every fee is charged in that coin instead (a fee token), its value at the last
  price of ``MNT<quote>`` (``set_price`` it), rounded up to 8 places.
- Orders: ``order(link_id=None, order_id=None)`` -> ``Order`` (``status``, ``cum_qty``,
  ``cum_value``, ``cum_fee``, ``leaves`` ...) or None; ``orders()``; ``executions()``
  (the venue's own objects: read them, change the venue through its methods).
  ``fill(link_id, qty, price=None, maker=True)``: a scripted fill (price defaults to the
  order's limit; ``late=True``: a trade of an order that has ended -- canceled, its trade
  reported after -- which stays ended); ``auto_match = False``: resting orders no longer
  fill when ``set_price`` crosses them (new orders that cross still take at once).
  ``defer_cancels = True``: cancels are acknowledged (retCode 0) and the order stays
  live, so ``fill()`` can still fill it, until ``finish_cancels()``.
- Faults, each for the next ``times`` requests to ``path`` ("*": any path):
  ``fault(path, "http", status=503)``: that HTTP status with a non-JSON body, the venue
  does nothing; ``fault(path, "ratelimit")``: retCode 10006 (HTTP 200); ``fault(path,
  "ratelimit", status=429)``: HTTP 429 (both say when the limit resets, in
  ``X-Bapi-Limit-Reset-Timestamp``: ``reset_in_ms`` after now, default 1000);
  ``fault(path, "reject", code=170131, msg="Insufficient balance.")``: that Bybit error, the venue
  does nothing; ``fault(path, "lose")``: the venue acts (the order IS placed) and the
  answer is lost: the handler sleeps ``delay`` seconds (default 2; past the client's
  timeout) and closes without answering; ``fault(path, "lose", delay=0)``: it closes at
  once (a disconnect mid-order);
  ``fault(path, "drop")``: the connection closes before the venue acts.
  ``clear_faults()``.
- Record: ``requests(path=None)`` -> list of ``Recorded`` (``method``, ``path``, ``query``
  (dict), ``raw_query``, ``body`` (parsed JSON or None), ``raw_body``, ``headers`` (dict),
  ``header(name)`` (case-insensitive), ``status``, ``ret_code``); ``clear_requests()``.
- Clock: ``time_offset_ms`` shifts the venue's clock (server time and the recv_window
  check).

Endpoints, their sources, which ccxt call asks which, what ccxt raises for each fault: the
package's docstring (bench/venues/__init__.py).

Signatures are checked as Bybit documents: X-BAPI-SIGN = hex HMAC-SHA256 (secret) of
X-BAPI-TIMESTAMP + X-BAPI-API-KEY + X-BAPI-RECV-WINDOW + (the query string of a GET | the
body of a POST); an unknown key answers retCode 10003, a wrong signature 10004, a timestamp
outside the receive window 10002. Refusals: duplicate orderLinkId 170141 (ccxt
InvalidOrder), insufficient balance 170131 (InsufficientFunds), unknown or ended order on
cancel 170213 (OrderNotFound), lot / tick / minimum violations 170134-170140 (InvalidOrder).

Not emulated: WebSocket streams, order amendment, conditional (TP/SL) and margin orders,
batch endpoints, depth beyond the one price level per side, the venue's own rate limits
(only the switched-on faults), market-order slippage protection.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from decimal import Decimal
from http.server import ThreadingHTTPServer

from .bybit_book import (
    Balance,
    Book,
    Execution,
    Instrument,
    Order,
    Quote,
    VenueError,
    default_instruments,
)
from .bybit_http import FAULT_KINDS, Fault, Handler, Recorded, matching, since, spot_only
from .bybit_shapes import (
    coin_rows,
    execution_row,
    instrument_row,
    order_row,
    ticker_row,
    wallet_row,
)

__all__ = ["Balance", "BybitVenue", "Execution", "Instrument", "Order", "Recorded",
           "VenueError"]


class BybitVenue:
    """The emulated venue: an HTTP server on 127.0.0.1 and the book behind it."""

    def __init__(self, api_key: str = "venue-key", secret: str = "venue-secret", *,
                 balances: dict | None = None, instruments: list[Instrument] | None = None):
        self.api_key = api_key
        self.secret = secret
        self.lock = threading.RLock()
        self.book = Book()
        for inst in instruments or default_instruments():
            self.book.instruments[inst.symbol] = inst
        for coin, total in (balances if balances is not None else {"USDT": "10000"}).items():
            self.set_balance(coin, total)
        self.time_offset_ms = 0
        self._faults: dict[str, list[Fault]] = {}
        self._record: list[Recorded] = []
        self._frozen: dict[str, Quote] | None = None
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life --------------------------------------------------------------------------
    def start(self) -> BybitVenue:
        venue = self

        class VenueHandler(Handler):
            pass

        VenueHandler.venue = venue
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), VenueHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        name="bybit-venue", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()  # wakes handlers sleeping on a lost answer
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> BybitVenue:
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def urls(self) -> dict[str, str]:
        return {name: self.url for name in ("public", "private", "spot", "futures", "v2")}

    def ccxt(self, **config):
        """A ccxt.bybit client on this venue: spot markets only, the venue's key."""
        import ccxt

        options = {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]},
                   **config.pop("options", {})}
        client = ccxt.bybit({"apiKey": self.api_key, "secret": self.secret,
                             "enableRateLimit": False, "timeout": 3000,
                             "options": options, **config})
        client.urls["api"] = dict(self.urls)
        return client

    # -- market and account ------------------------------------------------------------
    def set_price(self, symbol: str, bid, ask, last=None, bid_size=None, ask_size=None):
        with self.lock:
            self.book.set_price(symbol, bid, ask, last, bid_size, ask_size)

    def freeze_tickers(self):
        with self.lock:
            self._frozen = {s: Quote(**vars(q)) for s, q in self.book.quotes.items()}

    def thaw_tickers(self):
        with self.lock:
            self._frozen = None

    def set_balance(self, coin: str, total, *, hold=0):
        with self.lock:
            b = self.book.balance(coin)
            b.total, b.locked = Decimal(str(total)), b.locked + Decimal(str(hold))

    def balance(self, coin: str) -> Balance:
        with self.lock:
            b = self.book.balance(coin)
            return Balance(b.total, b.locked)

    @property
    def fee_taker(self) -> Decimal:
        return self.book.fee_taker

    @fee_taker.setter
    def fee_taker(self, rate):
        self.book.fee_taker = Decimal(str(rate))

    @property
    def fee_maker(self) -> Decimal:
        return self.book.fee_maker

    @fee_maker.setter
    def fee_maker(self, rate):
        self.book.fee_maker = Decimal(str(rate))

    fee_coin = property(lambda self: self.book.fee_coin,
                        lambda self, coin: setattr(self.book, "fee_coin", coin))

    @property
    def auto_match(self) -> bool:
        return self.book.auto_match

    @auto_match.setter
    def auto_match(self, on: bool):
        self.book.auto_match = on

    @property
    def defer_cancels(self) -> bool:
        return self.book.defer_cancels

    @defer_cancels.setter
    def defer_cancels(self, on: bool):
        self.book.defer_cancels = on

    # -- orders ------------------------------------------------------------------------
    def order(self, link_id: str | None = None, order_id: str | None = None) -> Order | None:
        with self.lock:
            return self.book.find(order_id, link_id)

    def orders(self) -> list[Order]:
        with self.lock:
            return list(self.book.orders.values())

    def executions(self) -> list[Execution]:
        with self.lock:
            return list(self.book.executions)

    def fill(self, link_id: str, qty, price=None, *, maker: bool = True,
             late: bool = False) -> Execution:
        with self.lock:
            order = self.book.find(link_id=link_id)
            if order is None:
                raise KeyError(f"no order with orderLinkId {link_id!r}")
            px = Decimal(str(price)) if price is not None else order.price
            if px <= 0:
                raise ValueError("a MARKET order needs the fill price")
            (self.book.late if late else self.book.execute)(order, Decimal(str(qty)), px,
                                                             is_maker=maker)
            return self.book.executions[-1]

    def finish_cancels(self) -> list[Order]:
        with self.lock:
            return self.book.finish_cancels()

    # -- faults and record -------------------------------------------------------------
    def fault(self, path: str, kind: str, *, times: int = 1, **options):
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {kind!r} is not one of {FAULT_KINDS}")
        with self.lock:
            self._faults.setdefault(path, []).append(Fault(kind, times, options))

    def clear_faults(self):
        with self.lock:
            self._faults.clear()

    def take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for key in (path, "*"):
                queue = self._faults.get(key)
                if queue:
                    fault = queue[0]
                    fault.times -= 1
                    if fault.times <= 0:
                        queue.pop(0)
                    return fault
        return None

    def note(self, rec: Recorded):
        with self.lock:
            self._record.append(rec)

    def pause(self, seconds: float):
        """Sleep as a handler losing its answer does; stop() wakes it."""
        self._stopping.wait(seconds)

    def requests(self, path: str | None = None) -> list[Recorded]:
        with self.lock:
            return [r for r in self._record if path is None or r.path == path]

    def clear_requests(self):
        with self.lock:
            self._record.clear()

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.time_offset_ms

    # -- answering ---------------------------------------------------------------------
    def answer(self, rec: Recorded) -> tuple[int, dict | None]:
        """The result of one request: (HTTP status, JSON answer or None for 404)."""
        route = self.routes.get((rec.method, rec.path))
        if route is None:
            return 404, None
        private, handler = route
        try:
            if private:
                self._authenticate(rec)
            params = rec.body if rec.method == "POST" else rec.query
            if not isinstance(params, dict):
                raise VenueError(10001, "params error: the body is not a JSON object")
            with self.lock:
                result = handler(self, params)
        except VenueError as exc:
            return self.refusal(exc)
        return 200, self.envelope(0, self.OK, result)

    #: the message of a success; a refusal's HTTP status and answer (Bybit: 200 with its
    #: retCode); what serves each (method, path): (signed?, handler)
    OK = "OK"
    routes: dict = {}

    def refusal(self, exc: VenueError) -> tuple[int, dict]:
        return 200, self.envelope(exc.ret_code, exc.ret_msg, {})

    def envelope(self, code: int, msg: str, result) -> dict:
        return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {},
                "time": self.now_ms()}

    @staticmethod
    def code_of(answer: dict):
        """The venue's result code in one of its answers (for the record)."""
        return answer["retCode"]

    def _authenticate(self, rec: Recorded):
        key = rec.header("X-BAPI-API-KEY")
        if key != self.api_key:
            raise VenueError(10003, "API key is invalid.")
        stamp = rec.header("X-BAPI-TIMESTAMP") or ""
        window = rec.header("X-BAPI-RECV-WINDOW") or "5000"
        payload = stamp + key + window + (rec.raw_body if rec.method == "POST"
                                          else rec.raw_query)
        want = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, (rec.header("X-BAPI-SIGN") or "").lower()):
            raise VenueError(10004, "error sign! origin_string[" + payload + "]")
        try:
            stamp_ms, window_ms = int(stamp), int(window)
        except ValueError:
            raise VenueError(10002, "invalid request, please check your timestamp") from None
        server = self.now_ms()
        if not server - window_ms <= stamp_ms < server + 1000:
            raise VenueError(10002, "invalid request, please check your server timestamp "
                             f"or recv_window param. req_timestamp[{stamp_ms}],"
                             f"server_timestamp[{server}],recv_window[{window_ms}]")

    # -- endpoints (called under the lock) ---------------------------------------------
    def _time(self, params):
        now = self.now_ms()
        return {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}

    def _instruments(self, params):
        spot_only(params)
        rows = [instrument_row(i) for i in self.book.instruments.values()
                if params.get("symbol") in (None, i.symbol)]
        return {"category": "spot", "list": rows, "nextPageCursor": ""}

    def _tickers(self, params):
        spot_only(params)
        quotes = self._frozen if self._frozen is not None else self.book.quotes
        symbol = params.get("symbol")
        if symbol is not None and symbol not in self.book.instruments:
            raise VenueError(10001, "Not supported symbols")
        rows = [ticker_row(s, q) for s, q in quotes.items() if symbol in (None, s)]
        return {"category": "spot", "list": rows}

    def _wallet(self, params):
        if params.get("accountType") != "UNIFIED":
            raise VenueError(10001, "accountType only support UNIFIED.")
        coins = params.get("coin")
        wanted = set(coins.split(",")) if coins else None
        balances = {c: b for c, b in self.book.balances.items()
                    if wanted is None or c in wanted}
        return {"list": [wallet_row(balances, self.book.quotes)]}

    def _account_info(self, params):
        return {"marginMode": "REGULAR_MARGIN", "updatedTime": str(self.now_ms()),
                "unifiedMarginStatus": 6, "dcpStatus": "OFF", "timeWindow": 10,
                "smpGroup": 0, "isMasterTrader": False, "spotHedgingStatus": "OFF"}

    def _api_info(self, params):
        return {"id": "1", "note": "emulator", "apiKey": self.api_key, "readOnly": 0,
                "secret": "", "permissions": {"Spot": ["SpotTrade"], "Wallet": [],
                                              "ContractTrade": [], "Options": [],
                                              "Derivatives": [], "Exchange": []},
                "ips": ["*"], "type": 1, "unified": 0, "uta": 1, "userID": 1,
                "inviterID": 0, "vipLevel": "No VIP", "mktMakerLevel": "0",
                "affiliateID": 0, "isMaster": True}

    def _coins(self, params):
        coins = {c for i in self.book.instruments.values() for c in (i.base, i.quote)}
        return {"rows": coin_rows(sorted(coins))}

    def _create(self, params):
        order = self.book.create(params)
        return {"orderId": order.order_id, "orderLinkId": order.link_id}

    def _cancel(self, params):
        spot_only(params)
        order = self._lookup(params)
        if order is None or order.symbol != params.get("symbol"):
            raise VenueError(170213, "Order does not exist.")
        self.book.cancel(order)
        return {"orderId": order.order_id, "orderLinkId": order.link_id}

    def _lookup(self, params) -> Order | None:
        order_id, link = params.get("orderId"), params.get("orderLinkId")
        if not order_id and not link:
            raise VenueError(10001, "params error: orderId or orderLinkId is required")
        return self.book.find(order_id, link)

    def _realtime(self, params):
        spot_only(params)
        if params.get("orderFilter", "Order") != "Order":
            return {"category": "spot", "list": [], "nextPageCursor": ""}
        if params.get("orderId") or params.get("orderLinkId"):
            # by id the unified account answers any of its recent orders, in any state
            found = self._lookup(params)
            orders = [found] if found is not None else []
        else:
            orders = [o for o in self.book.orders.values() if o.is_open]
        return self._page(params, matching(orders, params), 20, 50, order_row)

    def _history(self, params):
        spot_only(params)
        if params.get("orderId") or params.get("orderLinkId"):
            found = self._lookup(params)
            orders = [found] if found is not None else []
        else:
            orders = [o for o in self.book.orders.values() if not o.is_open]
        status = params.get("orderStatus")
        orders = [o for o in matching(orders, params) if status in (None, o.status)]
        return self._page(params, since(orders, params, lambda o: o.created), 20, 50,
                          order_row)

    def _executions(self, params):
        spot_only(params)
        execs = [e for e in self.book.executions
                 if params.get("symbol") in (None, e.order.symbol)
                 and params.get("orderId") in (None, e.order.order_id)
                 and params.get("orderLinkId") in (None, e.order.link_id)
                 and params.get("execType") in (None, "Trade")]
        return self._page(params, since(execs, params, lambda e: e.time), 50, 100,
                          execution_row)

    def _page(self, params, items: list, default: int, most: int, row) -> dict:
        """Newest first, ``limit`` a page, the cursor being the offset of the next page."""
        try:
            limit = min(int(params.get("limit", default)), most)
            start = int(params.get("cursor") or 0)
        except ValueError:
            raise VenueError(10001, "params error: limit or cursor invalid") from None
        items = list(reversed(items))
        page = items[start:start + limit]
        more = start + limit < len(items)
        return {"category": "spot", "list": [row(x) for x in page],
                "nextPageCursor": str(start + limit) if more else ""}


#: (method, path) -> (signed?, handler)
ROUTES = {
    ("GET", "/v5/market/time"): (False, BybitVenue._time),
    ("GET", "/v5/market/instruments-info"): (False, BybitVenue._instruments),
    ("GET", "/v5/market/tickers"): (False, BybitVenue._tickers),
    ("GET", "/v5/account/wallet-balance"): (True, BybitVenue._wallet),
    ("GET", "/v5/account/info"): (True, BybitVenue._account_info),
    ("GET", "/v5/user/query-api"): (True, BybitVenue._api_info),
    ("GET", "/v5/asset/coin/query-info"): (True, BybitVenue._coins),
    ("POST", "/v5/order/create"): (True, BybitVenue._create),
    ("POST", "/v5/order/cancel"): (True, BybitVenue._cancel),
    ("GET", "/v5/order/realtime"): (True, BybitVenue._realtime),
    ("GET", "/v5/order/history"): (True, BybitVenue._history),
    ("GET", "/v5/execution/list"): (True, BybitVenue._executions),
}

BybitVenue.routes = ROUTES
