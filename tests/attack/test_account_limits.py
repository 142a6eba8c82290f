"""The limits across every profile of a broker account (`[risk.accounts.<id>]`), through
the wire: what the README promises of `max_gross_exposure` and of an account halted by
its loss limits and then resumed by hand.

The market is replayed (tests/protocol/market.py: taker 0.1 %, maker 0.05 %, no
slippage), moved one step at a time; risk is marked to market at every tick.
"""

from __future__ import annotations

from ..protocol.replies import error, ok

FLAT = [[("TESTUSDT", "100.00", "100.20")]] * 8
#: flat, then a fall of 6 %
FALL = [[("TESTUSDT", "100.00", "100.20")]] * 2 + [[("TESTUSDT", "94.00", "94.20")]] * 6


def create(r, profile_id: str, allocated: str = "10000") -> None:
    ok(r.request("profile.create", {"profile_id": profile_id, "allocated": allocated}))


def resting_buy(r, profile_id: str, key: str, qty: str = "9", price: str = "100") -> dict:
    """A LIMIT BUY just under the ask: it rests (its notional counts in exposure)."""
    return r.request("order.submit", {"profile_id": profile_id, "client_order_id": key,
                                      "symbol": "TESTUSDT", "side": "BUY", "type": "LIMIT",
                                      "qty": qty, "price": price})


def test_max_gross_exposure_counts_the_working_orders_of_the_other_profiles(market):
    """`max_gross_exposure` is checked in each ledger against "what the other profiles
    last reported, at most one tick old" (README). But a profile reports only after a
    fill and on the ticks of symbols it holds a position in: one with working orders and
    no position never reports, however many ticks pass. So each profile of the account
    sees the others at 0 and may place up to the whole account limit: here `a` places
    900 against a limit of 1000 and, two ticks later, `b` is let through with another
    900 (and `c` would be too: every order fills, 2700 of gross exposure on an account
    capped at 1000)."""
    server, r = market(FLAT, risk={"mark_interval_s": 0,
                                   "accounts": {"paper": {"max_gross_exposure": "1000"}}})
    for pid in ("a", "b"):
        create(r, pid)
    server.system.advance(1)
    ok(resting_buy(r, "a", "a1"))  # 9 * 100 = 900 of the account's 1000
    server.system.advance(2)  # two ticks later a's 900 is more than one tick old
    # b's own 900 on top of a's working 900 is 1800 > 1000
    details = error(resting_buy(r, "b", "b1"), "RISK_REJECTED")
    assert details["reason"] == "MAX_GROSS_EXPOSURE"


def test_a_resumed_account_stays_resumed_after_the_next_tick(market):
    """An account whose profiles crossed `daily_loss_limit` is HALTED by the server
    (``changed_by`` ``account-risk``) "until capflow resume --account" (README). The
    resume (`account.set_state` ACTIVE) answers ok and the account is ACTIVE, but the
    loss that tripped it is still there, nothing re-bases it (as `risk.reset` re-bases a
    profile's breaker), and the next tick that marks a position halts the account again
    and cancels the entries placed meanwhile. The operator is told the account is
    resumed while it is not; for `max_total_loss` it can never be resumed. Either the
    resume must be refused while the limit is crossed, or it must hold."""
    server, r = market(FALL, risk={"mark_interval_s": 0,
                                   "accounts": {"paper": {"daily_loss_limit": "50"}}})
    create(r, "p")
    server.system.advance(1)
    ok(resting_buy(r, "p", "in", qty="10", price="100.20"))
    server.system.advance(2)  # filled at 100.20, then marked at 94.10: -61.00 and fees
    assert ok(r.request("system.health"))["status"] == "degraded"

    resumed = r.request("account.set_state", {"account_id": "paper", "state": "ACTIVE",
                                              "reason": "reviewed, carry on"})
    if resumed["ok"] is not True:  # refusing the resume is an honest answer
        return
    assert resumed["result"]["state"] == "ACTIVE"
    server.system.advance(1)  # the next tick marks the position
    health = ok(r.request("system.health"))
    assert (health["status"], health["reasons"]) == ("ok", []), health
    sig = ok(r.request("signal.submit", {"profile_id": "p", "symbol": "TESTUSDT",
                                         "side": "BUY", "price": "94.20", "qty": "1",
                                         "timestamp": "2026-01-05T12:00:00+00:00"}))
    assert sig["risk_reason"] != "TRADING_HALTED", sig
