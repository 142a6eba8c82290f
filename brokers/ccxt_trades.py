"""Reading a venue's trades where ccxt's unified calls differ between venues: an order's
trades, every trade of the account, and the client order id of each.

- **An order's trades.** Bybit answers them directly (ccxt ``fetch_order_trades``);
  Bitget has no such call in ccxt: its account's trades (``fetch_my_trades``) are read
  narrowed to the order id, and only that order's are kept.
- **Every page.** Where ccxt follows the venue's cursor (Bybit) ``paginate`` reads them
  all. Where it does not (Bitget spot: 100 trades a page, ``idLessThan`` the cursor),
  the cursor the dialect names is followed here, oldest id of a page to the next, until
  a short page.
- **A symbol.** Venues that list trades only per symbol (Bitget) are asked once for
  each of the account's symbols.
- **Client ids.** Bitget's trades carry the venue's order id but not the client's: the
  order is looked up once (``fetch_order``) and its client id remembered, so a fill of
  capflow's can be told from a stranger's.
"""

from __future__ import annotations

#: an order's trades come a page at a time (Bybit: 50 by default, 100 at most): read every
#: page, or an order filled in more pieces than one page never adds up and never ends
ALL_PAGES = {"paginate": True, "paginationCalls": 10_000}
#: at most this many pages of trades are read in one go (100,000 trades on Bitget)
MAX_PAGES = 1_000


def order_trades(client, dialect, order_id: str, symbol: str) -> list[dict]:
    """Every trade of one order."""
    if client.has.get("fetchOrderTrades"):
        return client.fetch_order_trades(order_id, symbol, None, None, dict(ALL_PAGES))
    trades = my_trades(client, dialect, symbol, {"orderId": order_id})
    return [t for t in trades if str(t.get("order")) == str(order_id)]


def my_trades(client, dialect, symbol: str | None, params: dict | None = None) -> list[dict]:
    """Every trade of the account (of one symbol, or all), every page."""
    params = dict(params or {})
    if dialect.trades_cursor is None:
        return client.fetch_my_trades(symbol, None, None, {**params, **ALL_PAGES})
    out: list[dict] = []
    seen: set[str] = set()
    cursor = None
    for _ in range(MAX_PAGES):
        ask = dict(params) if cursor is None else {**params, dialect.trades_cursor: cursor}
        page = client.fetch_my_trades(symbol, None, dialect.page_size, ask)
        new = [t for t in page if str(t["id"]) not in seen]
        out += new
        seen.update(str(t["id"]) for t in new)
        if not new or len(page) < dialect.page_size:
            break
        cursor = min((str(t["id"]) for t in page), key=lambda i: (len(i), i))
    return out


def account_trades(client, dialect, symbols) -> list[dict]:
    """Every trade of the account; per symbol where the venue asks for one."""
    if not dialect.trades_need_symbol:
        return my_trades(client, dialect, None)
    # one name a market: ccxt takes the venue's id (BTCUSDT) as well as BTC/USDT
    unified = sorted({client.market(s)["symbol"] for s in symbols})
    return [t for s in unified for t in my_trades(client, dialect, s)]


def client_id(t: dict) -> str:
    """The client order id a trade or order carries, under whichever name the venue
    gives it ("" if none)."""
    info = t.get("info") or {}
    return str(t.get("clientOrderId") or info.get("orderLinkId") or info.get("clOrdId")
               or info.get("clientOid") or info.get("clientOrderId") or "")


def with_client_ids(client, dialect, trades: list[dict], known: dict[str, str]) -> None:
    """Give each trade that carries no client order id its order's: from `known` (venue
    order id -> client id, also filled in here) or from the venue, one lookup an order."""
    for t in trades:
        if client_id(t):
            continue
        oid = str(t.get("order") or "")
        if not oid:
            continue
        if oid not in known:
            o = client.fetch_order(oid, t["symbol"], dict(dialect.fetch_order_params))
            known[oid] = client_id(o)
        if known[oid]:
            t["clientOrderId"] = known[oid]
