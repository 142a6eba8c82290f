"""Entries priced far from the market, or filled in pieces, through the wire: what they
reserve must cover what they cost, and a position must not be opened only to be closed
by its own stop on the next tick.

The market is replayed (tests/protocol/market.py: taker 0.1 %, maker 0.05 %, no
slippage). A LIMIT BUY reserves qty * limit * 1.0005, a MARKET order
qty * ref * 1.01 * 1.001, rounded up to the cent; a fill books its notional and its fee,
each rounded up to the cent.
"""

from __future__ import annotations

from decimal import Decimal

from ..protocol.market import SETTINGS
from ..protocol.replies import ok


def ticks(path, steps) -> str:
    """A replay CSV: one row per (symbol, bid, ask, liquidity) of each step."""
    lines = ["ts,symbol,bid,ask,liquidity"]
    for i, step in enumerate(steps, start=1):
        for symbol, bid, ask, liquidity in step:
            lines.append(f"2026-01-05T12:00:{i:02d}+00:00,{symbol},{bid},{ask},{liquidity}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def start(live, raw, tmp_path, steps):
    server = live(simulator={"replay": ticks(tmp_path / "ticks.csv", steps), "symbols": {}},
                  brokers={"accounts": {"paper": {"settings": SETTINGS}}})
    return server, raw(server.endpoint)


def create(r, allocated: str, profile_id: str = "p") -> None:
    ok(r.request("profile.create", {"profile_id": profile_id, "allocated": allocated}))


def ledger(r, profile_id: str = "p") -> dict:
    return ok(r.request("ledger.get", {"profile_id": profile_id}))


def order(r, client_order_id: str, **args) -> dict:
    return r.request("order.submit", {"profile_id": "p", "client_order_id": client_order_id,
                                      "symbol": "TESTUSDT", **args})


def test_a_limit_buy_that_fills_at_its_limit_costs_no_more_than_it_reserved(
        live, raw, tmp_path):
    """A LIMIT BUY reserves ``round_up(qty * limit * (1 + maker))`` in one rounding, but
    its fill is booked as ``round_up(qty * price) + round_up(qty * price * maker)``: two
    roundings up. When it fills at its limit the fill costs a cent more than the
    reservation, taken from `available`. A profile that put all of its `available` into
    the order ends at -0.01 and is switched to REDUCE_ONLY (NEGATIVE_AVAILABLE) by a fill
    the server itself accepted: the README promises that `available` never goes below
    zero through an operation that can be denied, and that the entry is reserved at
    what it costs. (The MARKET path bisects a `max_price` for exactly this rounding; the
    LIMIT path uses the limit as is.)"""
    server, r = start(live, raw, tmp_path, [[("TESTUSDT", "99.99", "100.00", "1000")]] * 3)
    create(r, "100.06")
    server.system.advance(1)  # 99.99 / 100.00
    # today: 1.00001 * 100.00 * 1.0005 = 100.0510005 -> 100.06 reserved, every cent of
    # the profile (a server that reserves what the fill costs refuses it instead)
    reply = order(r, "lim", side="BUY", type="LIMIT", qty="1.00001", price="100.00")
    server.system.advance(1)  # the ask 100.00 meets the limit: it fills at 100.00
    # booked: notional 100.001 -> 100.01, fee 0.0500005 -> 0.06: 100.07 for 100.06 reserved
    led = ledger(r)
    assert Decimal(led["available"]) >= 0 and led["state"] == "ACTIVE", (reply, led)


def test_a_market_entry_filled_in_pieces_at_its_max_price_stays_within_its_reservation(
        live, raw, tmp_path):
    """A MARKET entry's `max_price` is chosen so that ONE fill of the whole quantity at
    that price (notional and fee each rounded up) fits its reservation. The paper broker
    fills it in pieces when a tick's liquidity is short, and each piece rounds its
    notional and fee up again, so the pieces together cost more than the reservation
    (2 cents here, more with more pieces). The extra is taken from `available`, which
    goes negative, and the profile goes REDUCE_ONLY: the README says the broker "never
    fills an entry above the price its capital covers" and that a price far from the
    market never reserves less than the entry costs. Signals are MARKET entries too."""
    steps = ([[("TESTUSDT", "100.00", "100.20", "1000")]]
             + [[("TESTUSDT", "101.00", "101.20", "1")]] * 4)
    server, r = start(live, raw, tmp_path, steps)
    create(r, "303.91")
    server.system.advance(1)  # 100.00 / 100.20
    # 3 * 100.20 * 1.01 * 1.001 = 303.9096... -> 303.91; max_price 101.20, where one fill
    # of 3 would cost 303.60 + 0.31 (fee 0.3036) = 303.91
    reply = order(r, "mkt", side="BUY", type="MARKET", qty="3")
    server.system.advance(4)  # three ticks of 1 unit at the ask 101.20, the max_price
    # booked today: 3 x (101.20 + fee 0.1012 -> 0.11) = 303.93 for 303.91 reserved
    led = ledger(r)
    assert Decimal(led["available"]) >= 0 and led["state"] == "ACTIVE", (reply, led)


def test_a_marketable_limit_entry_cannot_carry_a_stop_the_market_has_crossed(market):
    """`order.submit` refuses a take-profit or stop-loss that the market has already
    crossed, but only for MARKET orders. A LIMIT BUY priced above the ask is filled at
    once at the ask, exactly like a MARKET order, and its stop-loss (below its limit, as
    required, but above the bid) closes the position on the very next tick, at a loss:
    the position the brief asks about, opened only to be stopped out. The check must
    apply to a LIMIT entry that the market already crosses too."""
    server, r = market([[("TESTUSDT", "100.00", "100.20")]] * 4)
    create(r, "10000")
    server.system.advance(1)  # 100.00 / 100.20
    # the limit 200 is far above the ask: marketable. Its stop 150 is above the bid 100.00
    reply = order(r, "lim", side="BUY", type="LIMIT", qty="1", price="200",
                  tp_price="250", sl_price="150")
    server.system.advance(2)  # fills at 100.20; then the bid 100.00 is below the stop
    stopped = [p for p in ok(r.request("position.list", {"profile_id": "p"}))["positions"]
               if p["close_reason"] == "sl"]
    assert stopped == [], (reply, stopped)


def test_a_sell_limit_placed_before_the_market_has_a_price_cannot_sell_far_below_it(
        live, raw, tmp_path):
    """A SELL LIMIT sent before its symbol has a market price (a new symbol, a server
    just started, a replay not yet ticking) is reserved at its own limit, and its
    `max_price` is that limit. When the market appears (at 100) the paper broker caps
    the fill at `max_price`: the short is opened at 1 while the bid is 100.00, i.e. at
    a price the market never offered. Its stop-loss (2, above the limit as required) is
    then crossed at once: the position is closed on the next tick with a loss of
    5 * (100.20 - 1) = 496, against a reservation of 5.01, so `available` goes deeply
    negative and the profile REDUCE_ONLY. One request turns 5 of reserved capital into
    a 496 loss: every promise of the brief's first point is broken at once."""
    server, r = start(live, raw, tmp_path, [[("TESTUSDT", "100.00", "100.20", "1000")]] * 4)
    create(r, "100")
    # no tick yet: TESTUSDT has no market price
    assert r.request("market.price", {"symbol": "TESTUSDT"})["ok"] is False
    reply = order(r, "early", side="SELL", type="LIMIT", qty="5", price="1", sl_price="2")
    server.system.advance(1)  # the market appears at 100.00 / 100.20
    positions = ok(r.request("position.list", {"profile_id": "p"}))["positions"]
    # a short can only be opened at what the market bids (or better), never at 1
    bid = Decimal("100.00")
    assert all(Decimal(p["entry_price"]) >= bid for p in positions), (reply, positions)
    server.system.advance(1)
    led = ledger(r)
    assert Decimal(led["available"]) >= 0 and led["state"] == "ACTIVE", led
