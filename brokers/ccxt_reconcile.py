"""Reconciling a ccxt venue account with capflow's rows (`brokers.reconcile` says what
the report holds).

It runs at connect, every ``reconcile_every_s`` and when asked (`account.reconcile`), in
two halves:

1. **The cut**, on the venue worker (`take_cut`), between two of its jobs, so the
   engine's orders do not move while it is taken: the followed orders are polled first
   (what they filled is booked the ordinary way), then the venue is read -- balances,
   then open orders, then fills (in that order, so a fill the balances show is in the
   fills read after them). Orders sent and not answered (``SENDING``, ``UNKNOWN``) are in
   flight, and so is a followed order with a fill at the venue the engine has not seen:
   the coins of their symbols are not compared this time.
2. **The comparison**, on the account manager's thread (`compare`), where the adapter's
   positions are: everything the worker reported before the cut has been drained by
   then. A venue fill is booked when its id (``<exchange>:<trade id>``) is neither in
   the fills table (`BookedRows.booked_fills`, durable across restarts) nor among the
   fills reported in this run, and its client order id is one of capflow's; a fill of an
   order capflow did not send, an open order it does not know, a coin whose amount
   differs from what capflow's positions, dust and baseline hold by a lot step or more
   are differences; the fees paid in a third coin (`ccxt_books`) count as spent from
   it. So is a coin whose ``locked`` amount at the venue differs from what the open
   orders lock (`Cut.locks`; the coins of orders in flight are not compared).

The account's currency is not compared: capflow's cash *is* the venue's (less its
baseline), and it becomes the account's capital (capped by ``max_live_capital``).
Not done: fills older than the venue answers (Bybit: the last 7 days).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
from loguru import logger

from capflow.actors.model.money import ZERO
from capflow.brokers.ccxt_engine import amount, dec, fee_of, third_coin
from capflow.brokers.ccxt_sanity import beyond_problem, trade_problem
from capflow.brokers.ccxt_trades import ALL_PAGES, account_trades, client_id, with_client_ids
from capflow.brokers.events import BrokerPosition, EntryFilled, FillUnbookable, PositionExited
from capflow.brokers.reconcile import Reconciled

_ENTRY = re.compile(r"\Acf([0-9a-f]{28})e\Z")
_EXIT = re.compile(r"\Acf([0-9a-f]{28})x([0-9]+)\Z")


@dataclass
class Cut:
    """The venue at one moment, and what of capflow's was moving then."""

    ts: datetime
    #: coin -> (total, free, locked)
    balances: dict[str, tuple[Decimal, Decimal, Decimal]]
    #: open orders at the venue the engine does not follow
    unknown_orders: list[dict]
    #: fills at the venue of orders the engine does not follow (normalized)
    trades: list[dict]
    in_flight: list[str] = field(default_factory=list)
    #: base coins of symbols with an order in flight
    busy_coins: set[str] = field(default_factory=set)
    #: coin -> what the open orders lock of it: capflow's working orders (as far as it
    #: booked their fills) and the orders it does not follow (reported on their own)
    locks: dict[str, Decimal] = field(default_factory=dict)
    #: base and quote coins of symbols with an order in flight: their locks move
    lock_busy: set[str] = field(default_factory=set)


_cid = client_id


def _trade_symbols(b, live, coins) -> set[str]:
    """Where the venue lists trades per symbol: the account's configured symbols, those
    of its followed orders and of its positions, and the market against the account's
    currency of every coin it holds (a fill missed while capflow was down, of an order
    that had ended, leaves its coin in the balance: it is found there, symbols listed
    or not)."""
    symbols = set(b.config.symbols.values()) | {x.venue_symbol for x in live}
    for p in list(b.positions.values()):
        venue_symbol = b.venue_symbols.get(p.symbol)
        if venue_symbol:
            symbols.add(venue_symbol)
    markets = b.client.markets or {}
    for coin in coins:
        pair = f"{coin}/{b.config.currency}"
        if coin != b.config.currency and pair in markets:
            symbols.add(pair)
    return symbols


def take_cut(b, asked: int = 0) -> None:
    """On the worker: take a cut and report it (`Reconciled` after `compare`, through the
    outbox: ``("cut", Cut | None, error)``)."""
    import ccxt

    engine = b.engine
    # no sends in the middle of the cut: an order placed then would look unknown to it
    yielding, b.worker.yielding = b.worker.yielding, False
    try:
        engine.poll_orders(lookups=False)
        live = list(engine.live.values())
        followed = {x.cid: x for x in live}
        in_flight = sorted(x.cid for x in live if x.state in ("SENDING", "UNKNOWN"))
        busy = {x.venue_symbol for x in live if x.state in ("SENDING", "UNKNOWN")}
        client = b.client
        raw = client.fetch_balance()
        balances = {}
        for coin, total in (raw.get("total") or {}).items():
            t = amount(total)
            f = amount((raw.get("free") or {}).get(coin))
            u = amount((raw.get("used") or {}).get(coin))
            if t or f or u:
                balances[coin] = (t, f, u)
        orders = []
        locks: dict[str, Decimal] = {}
        for x in live:
            if x.state == "OPEN" and x.price is None:
                busy.add(x.venue_symbol)  # a market order not ended: its coins move
            elif x.state == "OPEN":
                _lock(client, locks, x.venue_symbol, x.side, x.qty - x.skip - x.booked,
                      x.price)
        for o in client.fetch_open_orders(None, None, None, dict(ALL_PAGES)):
            if _cid(o) in followed:
                continue
            _lock(client, locks, o.get("symbol"), str(o.get("side") or "").upper(),
                  amount(o.get("amount")) - amount(o.get("filled")), amount(o.get("price")))
            orders.append({"client_order_id": _cid(o) or None,
                           "venue_order_id": str(o.get("id")), "symbol": o.get("symbol"),
                           "side": str(o.get("side") or "").upper(),
                           "qty": amount(o.get("amount")),
                           "price": amount(o.get("price")),
                           "filled": amount(o.get("filled"))})
        trades = []
        places = b.money_places
        venue_trades = account_trades(client, b.dialect, _trade_symbols(b, live, balances))
        known = b.__dict__.setdefault("order_client_ids", {})  # venue order id -> client id
        known.update({x.venue_id: x.cid for x in live if x.venue_id})
        with_client_ids(client, b.dialect, venue_trades, known)
        for t in venue_trades:
            cid = _cid(t)
            x = followed.get(cid)
            if x is not None:
                if str(t["id"]) not in x.seen:  # filled, and the engine has not seen it
                    busy.add(x.venue_symbol)
                continue
            _supersede(engine, cid)
            market = client.market(t["symbol"])
            fee, fee_qty, _ = fee_of(t, market["base"], market["quote"], places)
            fill_id = f"{b.settings.exchange}:{t['id']}"
            third = third_coin(b, t, market["base"], market["quote"], fill_id)
            fee = third.pop("fee", fee)
            trades.append({"fill_id": fill_id, **third,
                           "client_order_id": cid or None, "symbol": t["symbol"],
                           "side": str(t.get("side") or "").upper(),
                           "qty": dec(t["amount"]), "price": dec(t["price"]), "fee": fee,
                           "fee_qty": fee_qty, "ts": t.get("timestamp") or 0})
        cut = Cut(ts=b.clock.now(), balances=balances, unknown_orders=orders,
                  trades=sorted(trades, key=lambda t: (t["ts"], t["fill_id"])),
                  in_flight=in_flight, busy_coins={_base(sym) for sym in busy},
                  locks=locks, lock_busy={c for sym in busy for c in sym.split("/")})
    except Exception as exc:  # the venue's errors, and answers ccxt could not parse
        if isinstance(exc, ccxt.BaseError):
            logger.warning("reconciling {}: reading the venue failed: {}", b.account_id,
                           str(exc)[:300])
        else:
            logger.exception("reconciling {}: reading the venue failed", b.account_id)
        b.worker.post(("cut", None, f"{type(exc).__name__}: reading the venue failed",
                       asked))
        return
    finally:
        b.worker.yielding = yielding
    b.worker.post(("cut", cut, None, asked))


def _lock(client, locks: dict[str, Decimal], symbol: str, side: str, left: Decimal,
          price: Decimal | None) -> None:
    """Add what an open spot order locks: a buy the quote its rest costs at its limit, a
    sell the base coins of its rest."""
    if left <= 0 or not symbol:
        return
    market = client.market(symbol)
    if side == "BUY":
        coin, value = market["quote"], left * (price or ZERO)
    else:
        coin, value = market["base"], left
    if value > 0:
        locks[coin] = locks.get(coin, ZERO) + value


def _supersede(engine, cid: str) -> None:
    """A fill of an exit the engine does not follow (sent before a restart, say): an
    exit of the same position that the engine is still looking up, unanswered, is
    superseded -- the venue executed the other one."""
    m = _EXIT.match(cid)
    if m is None:
        return
    for live in list(engine.live.values()):
        if (live.kind == "exit" and live.state == "UNKNOWN" and live.cid != cid
                and _EXIT.match(live.cid) and _EXIT.match(live.cid).group(1) == m.group(1)):
            engine.superseded(live)


def _base(venue_symbol: str) -> str:
    return venue_symbol.split("/")[0]


# -- on the account manager's thread ------------------------------------------------------


def compare(b, cut: Cut | None, error: str | None, asked: int = 0) -> Reconciled:
    """The report of a cut, against the adapter's positions and the stored fills; the
    fills capflow missed are emitted (booked) on the way."""
    now = b.clock.now()
    if cut is None:
        return Reconciled(account_id=b.account_id, ts=now, report={}, error=error,
                          asked=asked)
    rows = b.rows
    # orders the adapter knows and the engine did not follow at the cut (restored, and
    # not yet looked up): the engine will; their coins are in flight
    known = b.known_client_ids()
    trades = []
    for t in cut.trades:
        if t["client_order_id"] in known:
            cut.busy_coins.add(_base(t["symbol"]))
            cut.lock_busy.update(t["symbol"].split("/"))
        else:
            trades.append(t)
    cut.unknown_orders = [o for o in cut.unknown_orders if o["client_order_id"] not in known]
    ids = [t["fill_id"] for t in trades]
    emitted = set(b.reported_fills)  # read before storage: a commit in between is there
    stored = rows.booked_fills(ids) if rows is not None and ids else set()
    missed, unknown_fills = [], []
    for t in trades:
        if t["fill_id"] in emitted or t["fill_id"] in stored:
            continue
        booked = _book_missed(b, t) if rows is not None else None
        if booked is None or "unbookable" in booked:  # not booked: a difference
            unknown_fills.append({**_plain(t), **(booked or {})})
        else:
            missed.append({**_plain(t), **booked})
    balances, diff_coins = _balances(b, cut)
    diff_locks = _locked(b, cut, balances)
    cash = next((r["capflow"] for r in balances if r["status"] == "cash"), ZERO)
    held = sum((p.qty * p.entry_price for p in b.positions.values()), ZERO)
    differences = (len(diff_coins) + len(diff_locks) + len(cut.unknown_orders)
                   + len(unknown_fills))
    report = {"ts": cut.ts, "balances": balances,
              "unknown_orders": cut.unknown_orders, "missed_fills": missed,
              "unknown_fills": unknown_fills, "in_flight": cut.in_flight,
              "differences": differences, "capital": max(cash, ZERO) + held}
    return Reconciled(account_id=b.account_id, ts=now, report=report, asked=asked)


def _plain(t: dict) -> dict:
    return {k: t[k] for k in ("fill_id", "client_order_id", "symbol", "side", "qty",
                              "price")}


def _book_missed(b, t: dict) -> dict | None:
    """Emit a fill of one of capflow's orders that it never booked; what it was booked
    as, or None when the order is not capflow's."""
    cid = t["client_order_id"] or ""
    entry, exit_ = _ENTRY.match(cid), _EXIT.match(cid)
    problem = trade_problem(t["qty"], t["price"], t["fee"])
    if entry is not None:
        found = b.rows.find_order(f"ord_{entry.group(1)}")
        if found is None:
            return None
        profile_id, o = found
        problem = problem or beyond_problem(ZERO, t["qty"], o.qty, t["price"], o.side,
                                            o.max_price if o.type == "MARKET" else o.price)
        if problem is not None:
            return _unbookable(b, t, profile_id, problem)
        position_id = o.position_id or o.order_id
        e = EntryFilled(account_id=b.account_id, ts=b.clock.now(), order_id=o.order_id,
                        profile_id=profile_id, position_id=position_id,
                        fill_id=t["fill_id"], qty=t["qty"], price=t["price"], fee=t["fee"],
                        fee_qty=t["fee_qty"], liquidity="TAKER", **_third(t))
        held = t["qty"] - t["fee_qty"]
        p = b.positions.get(position_id)
        if p is None:
            b.positions[position_id] = BrokerPosition(
                position_id=position_id, profile_id=profile_id, symbol=o.symbol,
                side=o.side, qty=held, entry_price=t["price"], tp_price=o.tp_price,
                sl_price=o.sl_price, order_id=o.order_id)
        else:
            b.positions[position_id] = msgspec.structs.replace(p, qty=p.qty + held)
        b.emit_fill(e)
        return {"booked_as": "entry", "order_id": o.order_id, "profile_id": profile_id}
    if exit_ is not None:
        for prefix in ("pos", "ord"):
            found = b.rows.find_position(f"{prefix}_{exit_.group(1)}")
            if found is not None:
                break
        else:
            return None
        profile_id, p = found
        if problem is not None:
            return _unbookable(b, t, profile_id, problem)
        e = PositionExited(account_id=b.account_id, ts=b.clock.now(),
                           position_id=p.position_id, profile_id=profile_id,
                           fill_id=t["fill_id"], qty=t["qty"], price=t["price"],
                           fee=t["fee"], reason=_exit_reason(p, t["price"]), **_third(t))
        held = b.positions.get(p.position_id)
        if held is not None:
            left = held.qty - t["qty"]
            if left > 0:
                b.positions[p.position_id] = msgspec.structs.replace(held, qty=left)
            else:
                del b.positions[p.position_id]
        b.emit_fill(e)
        return {"booked_as": "exit", "position_id": p.position_id, "profile_id": profile_id}
    return None


def _third(t: dict) -> dict:
    return {k: t[k] for k in ("fee_coin", "fee_coin_qty") if k in t}


def _unbookable(b, t: dict, profile_id: str, problem: str) -> dict:
    """A missed fill that makes no sense (`ccxt_sanity`): reported, not booked."""
    b.emit_fill(FillUnbookable(account_id=b.account_id, ts=b.clock.now(),
                               profile_id=profile_id, fill_id=t["fill_id"],
                               reason=f"trade {t['fill_id']} ({t['client_order_id']}) "
                                      f"{problem}"))
    return {"unbookable": problem, "profile_id": profile_id}


def _exit_reason(p, price: Decimal) -> str:
    """Why an exit capflow never saw was sent: the close asked for, else the level its
    price is across (the watcher sent it), else by hand."""
    if p.close_requested:
        return p.close_requested
    up = p.side == "BUY"
    if p.tp_price is not None and (price >= p.tp_price if up else price <= p.tp_price):
        return "tp"
    if p.sl_price is not None and (price <= p.sl_price if up else price >= p.sl_price):
        return "sl"
    return "manual"


def _balances(b, cut: Cut) -> tuple[list[dict], list[str]]:
    cur = b.config.currency
    baseline = {c: Decimal(str(v)) for c, v in b.settings.baseline.items()}
    held: dict[str, Decimal] = dict(b.dust)
    for coin, paid in b.fee_coins.items():  # fees paid in a third coin: spent
        held[coin] = held.get(coin, ZERO) - paid
    step: dict[str, Decimal] = {}
    for p in b.positions.values():
        rule = b.venue_rules.rules.get(p.symbol)
        base = rule.venue_symbol.split("/")[0] if rule is not None else p.symbol
        held[base] = held.get(base, ZERO) + p.qty
    for rule in b.venue_rules.rules.values():
        base = _base(rule.venue_symbol)
        lot = max(rule.min_qty, rule.qty_step)
        if lot > 0:
            step[base] = min(step.get(base, lot), lot)
    rows, differs = [], []
    for coin in sorted(set(cut.balances) | set(held) | set(baseline) | {cur}):
        total, free, locked = cut.balances.get(coin, (ZERO, ZERO, ZERO))
        base = baseline.get(coin, ZERO)
        row: dict[str, Any] = {"coin": coin, "venue": {"total": total, "free": free,
                                                       "locked": locked},
                               "baseline": base}
        if coin == cur:
            row.update(capflow=total - base, difference=ZERO, status="cash")
        else:
            mine = held.get(coin, ZERO)
            diff = total - base - mine
            row.update(capflow=mine, difference=diff)
            if coin in cut.busy_coins:
                row["status"] = "in_flight"
            elif abs(diff) >= step.get(coin, Decimal("1e-18")) and diff != 0:
                row["status"] = "differs"
                differs.append(coin)
            else:
                row["status"] = "ok"
        rows.append(row)
    return rows, differs


def _locked(b, cut: Cut, rows: list[dict]) -> list[str]:
    """Add each coin's ``locked`` side to its balance row: what the venue locks against
    what the open orders should (`Cut.locks`); the coins whose lock differs by a lot
    step (a cent of the money's places for a quote coin) or more."""
    unit = Decimal(1).scaleb(-b.money_places)
    steps = {}
    for rule in b.venue_rules.rules.values():
        lot = max(rule.min_qty, rule.qty_step)
        if lot > 0:
            base = _base(rule.venue_symbol)
            steps[base] = min(steps.get(base, lot), lot)
    differs = []
    for row in rows:
        coin = row["coin"]
        expected = cut.locks.get(coin, ZERO)
        diff = row["venue"]["locked"] - expected
        if coin in cut.lock_busy:
            status = "in_flight"
        elif diff != 0 and abs(diff) >= steps.get(coin, unit):
            status = "differs"
            differs.append(coin)
        else:
            status = "ok"
        row["locked"] = {"orders": expected, "difference": diff, "status": status}
    return differs
