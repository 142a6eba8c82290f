"""Venue emulators on 127.0.0.1 that the real ccxt library talks to: for the tests of the live
adapters and for `bench/venue.py`, with no internet.

The Bybit v5 spot emulator (bybit.py), and the Bitget v2 spot emulator (bitget.py) on the
same book, matching and faults (its endpoints and sources: its module docstring).

Endpoints (shapes from Bybit's v5 API documents at https://bybit-exchange.github.io/docs/v5/
: market/time, market/instrument, market/tickers, account/wallet-balance, account/
account-info, user/apikey-info, asset/coin-info, order/create-order, order/cancel-order,
order/open-order, order/order-list, order/execution, error; and from ccxt's recorded
Bybit answers in ts/src/test/static/response/bybit.json and the sample answers in the
comments of ccxt's bybit.py, which also shows which fields ccxt reads):
- public GET /v5/market/time, /v5/market/instruments-info (category=spot),
  /v5/market/tickers (category=spot, symbol optional);
- private, signed: GET /v5/account/wallet-balance (accountType=UNIFIED), /v5/account/info
  and /v5/user/query-api (ccxt asks both once before its first order call, to learn that
  the account is unified), /v5/asset/coin/query-info (ccxt's load_markets asks it when it
  has a key: fetch_currencies), /v5/order/realtime, /v5/order/history,
  /v5/execution/list; POST /v5/order/create, /v5/order/cancel.
Any other path answers HTTP 404 (as Bybit does for an unknown route) and is recorded.

Which ccxt (4.5) call asks what, spot, unified account:
- load_markets: GET /v5/asset/coin/query-info (fetch_currencies, only with a key), GET
  /v5/market/instruments-info?category=spot (with options fetchMarkets.types=["spot"]);
- fetch_time: /v5/market/time; fetch_ticker / fetch_tickers: /v5/market/tickers;
- the first private call that needs the account mode (fetch_balance, create_order,
  fetch_order) first asks /v5/user/query-api and /v5/account/info, once per client;
- fetch_balance: /v5/account/wallet-balance?accountType=UNIFIED;
- create_order (limit, market, with cost) and create_market_buy_order_with_cost: POST
  /v5/order/create (a MARKET BUY with a price, or with a cost, is sent in quote coin);
- cancel_order: POST /v5/order/cancel (by orderId; params {"orderLinkId": ...} adds it);
- fetch_order(id, symbol, {"acknowledged": True}) (ccxt refuses without it on a unified
  account), fetch_open_order, fetch_open_orders: /v5/order/realtime (by orderId or
  orderLinkId the venue answers an order in any state);
- fetch_closed_order(s): /v5/order/history?orderStatus=Filled; fetch_canceled_orders:
  orderStatus=Cancelled (so neither lists a PartiallyFilledCanceled order);
- fetch_my_trades, fetch_order_trades: /v5/execution/list?execType=Trade (a trade's
  fee currency is its ``feeCoin``).

What ccxt 4.5 raises for each fault of the Bybit emulator: "http" 5xx ->
ExchangeNotAvailable (504 -> RequestTimeout); 429 and retCode 10006 -> RateLimitExceeded (a
NetworkError, not a DDoSProtection); "lose" with a delay past ccxt's ``timeout`` ->
RequestTimeout; "lose" with delay=0 and "drop" -> NetworkError. All of these are
NetworkError subclasses, so "the outcome of a create is unknown" cannot be told from the
class alone: a 5xx from a gateway may also come after the order was placed.
"""
