"""A kill switch that acts, embedded, in step mode over replayed prices: halts cancel the
working entries (by hand, automatically, globally), a fill after a halt is booked and
alerted, breakers trip on ticks alone, an account's loss limits halt it, a flatten closes
everything once while signals race it.

Fees: taker 0.1 %, maker 0.05 %, no slippage (tests/actors/test_trading.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from sqlalchemy import select

from capflow.actors.alerts import Alert
from capflow.actors.model import messages as m
from capflow.actors.model.errors import Conflict
from capflow.storage import schema as s

from .test_trading import SETTINGS, step

T = "TESTUSDT"
S = "SPIKEUSDT"
START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def write_path(path, steps) -> str:
    """One row per (symbol, bid, ask) of each step; the steps are one second apart."""
    lines = ["ts,symbol,bid,ask,liquidity"]
    for i, rows in enumerate(steps, start=1):
        ts = (START + timedelta(seconds=i)).isoformat()
        for symbol, bid, ask in rows:
            lines.append(f"{ts},{symbol},{bid},{ask},1000")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def market(make_system, sqlite_url, tmp_path, clock):
    def start(steps, **sections):
        replay = write_path(tmp_path / "ticks.csv", steps)
        sections.setdefault("risk", {})
        sections["risk"] = {"mark_interval_s": 0, **sections["risk"]}
        return make_system(sqlite_url, clock=clock,
                           simulator={"replay": replay, "symbols": {}},
                           brokers={"accounts": {"paper": {"settings": SETTINGS}}},
                           **sections)

    return start


@pytest.fixture
def alerts():
    """Every alert published on a System's bus."""
    seen: list[Alert] = []

    def listen(cf):
        cf.bus.subscribe(lambda events: seen.extend(e for e in events
                                                    if isinstance(e, Alert)))
        return seen

    return listen


def positions(cf, pid, status=None, symbol=None):
    return cf.trading.list_positions(pid, status=status, symbol=symbol)[0]


def order_of(cf, pid, order_id):
    return cf.trading.get_order(pid, order_id)


def journal(cf, pid) -> list[tuple[str, str]]:
    with cf.engine.connect() as c:
        return [(t, cause) for t, cause in c.execute(
            select(s.ledger_journal.c.type, s.ledger_journal.c.causation_id)
            .where(s.ledger_journal.c.profile_id == pid)
            .order_by(s.ledger_journal.c.seq))]


# -- states that act -------------------------------------------------------------------------

#: T: flat at 100, then falls through 90 at step 5. S: a short's symbol that spikes at 3
STATES_PATH = [
    [(T, "100.00", "100.02"), (S, "100.00", "100.02")],  # 1
    [(T, "100.00", "100.02"), (S, "100.00", "100.02")],  # 2: the short fills at 100.00
    [(T, "100.00", "100.02"), (S, "300.00", "300.02")],  # 3: S spikes
    [(T, "100.00", "100.02"), (S, "300.00", "300.02")],  # 4: the short is closed at 300.02
    [(T, "89.00", "89.02"), (S, "300.00", "300.02")],  # 5: T crosses every limit at 90
    [(T, "89.00", "89.02"), (S, "300.00", "300.02")],  # 6
]


def test_halted_by_hand_and_reduce_only_automatically_cancel_resting_entries(
        market, clock, alerts):
    cf = market(STATES_PATH)
    seen = alerts(cf)
    for pid in ("hand", "auto", "control"):
        cf.create_profile(pid, "2000")
    step(cf, clock)
    # auto: a short of 9 that will lose 9 * 200.02 = 1800.18, more than it has left
    cf.submit_order("auto", "short", S, "SELL", "9")
    step(cf, clock)  # 2: open at the bid 100.00
    limits = {pid: cf.submit_order(pid, "dip", T, "BUY", "5", type="LIMIT",
                                   price="90").result for pid in ("hand", "auto", "control")}
    cf.set_state("hand", "HALTED", "desk says stop", "ops")
    step(cf, clock)  # 3: S spikes
    [short] = positions(cf, "auto", "OPEN")
    cf.close_position("auto", short.position_id)
    step(cf, clock)  # 4: the close fills at the ask 300.02
    # the exit's loss left it short (the limit's 450.23 was still reserved): REDUCE_ONLY,
    # and the limit's cancel then gave the 450.23 back
    led = cf.ledger("auto")
    assert (led.state, led.realized_pnl, led.available) == (
        "REDUCE_ONLY", D("-1800.18"), D("196.21"))
    step(cf, clock, 2)  # 5-6: T falls through 90

    assert positions(cf, "hand", symbol=T) == []
    assert positions(cf, "auto", symbol=T) == []
    [filled] = positions(cf, "control", symbol=T)
    assert (filled.status, filled.qty_total, filled.entry_price) == ("OPEN", D("5"), D("89.02"))
    for pid in ("hand", "auto"):
        o = order_of(cf, pid, limits[pid].order_id)
        assert (o.status, o.filled_qty, o.reserved) == ("CANCELED", D("0"), D("0"))
    # canceled once each, with the reason of the halt
    assert ("OrderCapitalReleased", "profile HALTED: desk says stop") in journal(cf, "hand")
    assert ("OrderCapitalReleased", "profile REDUCE_ONLY: NEGATIVE_AVAILABLE") in journal(
        cf, "auto")
    assert [a.target for a in seen if a.kind == "entries_canceled"] == ["hand", "auto"]
    # the automatic change is an alert and makes the server degraded; the hand's is not
    [auto] = [a for a in seen if a.kind == "state_changed"]
    assert (auto.target, auto.details["state"], auto.reason) == (
        "auto", "REDUCE_ONLY", "NEGATIVE_AVAILABLE")
    assert cf.trading.safety.reasons() == [
        "profile auto is REDUCE_ONLY: NEGATIVE_AVAILABLE"]


def test_the_global_switch_cancels_every_resting_entry(market, clock, alerts):
    cf = market([[(T, "100.00", "100.02")]] * 2 + [[(T, "89.00", "89.02")]] * 3)
    seen = alerts(cf)
    for pid in ("a", "b"):
        cf.create_profile(pid, "2000")
    step(cf, clock)
    for pid in ("a", "b"):
        cf.submit_order(pid, "dip", T, "BUY", "5", type="LIMIT", price="90")
    cf.set_global_state("HALTED", "exchange incident", "ops")
    step(cf, clock, 2)  # 2-3: T falls through 90
    assert positions(cf, "a") == positions(cf, "b") == []
    assert sum(len(a.details["order_ids"]) for a in seen
               if a.kind == "entries_canceled") == 2
    # resumed: new entries fill again
    cf.set_global_state("ACTIVE", "resolved", "ops")
    cf.submit_order("a", "again", T, "BUY", "1", type="LIMIT", price="90")
    step(cf, clock)
    assert len(positions(cf, "a", "OPEN")) == 1


def test_a_fill_after_a_halt_is_booked_and_alerted(market, clock, alerts):
    """A race at the broker: the entry filled before the cancel reached it. Booked,
    never refused, and the new position is named so it can be closed."""
    cf = market([[(T, "100.00", "100.02")]] * 3)
    seen = alerts(cf)
    cf.create_profile("p", "2000")
    step(cf, clock)
    o = cf.submit_order("p", "m", T, "BUY", "1").result
    # the halt is stored, but its cancel has not reached the broker when the fill comes
    cf.trading.safety._cancel = lambda *a: None
    cf.set_state("p", "HALTED", "late", "ops")
    step(cf, clock)
    [pos] = positions(cf, "p", "OPEN")
    assert order_of(cf, "p", o.order_id).status == "FILLED"
    [alert] = [a for a in seen if a.kind == "entry_filled_while_blocked"]
    assert (alert.target, alert.details["position_id"]) == ("p", pos.position_id)
    assert "HALTED" in alert.reason


# -- risk marked to market -------------------------------------------------------------------

def test_a_breaker_trips_on_ticks_alone_with_the_ticks_time(market, clock, alerts):
    steps = [[(T, "100.00", "100.02")], [(T, "100.00", "100.02")],
             [(T, "99.50", "99.52")], [(T, "98.00", "98.02")], [(T, "97.00", "97.02")]]
    cf = market(steps, risk={"limits": {"daily_loss_limit_pct": "1"}})
    seen = alerts(cf)
    trips: list[m.BreakerTripped] = []
    cf.bus.subscribe(lambda events: trips.extend(e for e in events
                                                 if isinstance(e, m.BreakerTripped)))
    cf.create_profile("p", "10000")
    step(cf, clock)
    cf.submit_order("p", "in", T, "BUY", "50", type="LIMIT", price="100.02")
    step(cf, clock)  # 2: 50 @ 100.02 = 5001.00, fee 2.51 (maker)
    step(cf, clock)  # 3: last 99.51: -25.50 - 2.51 = 0.28 %: nothing
    assert trips == []
    step(cf, clock)  # 4: last 98.01: 50 * -2.01 - 2.51 = -103.01: 1.0301 % >= 1 %
    [trip] = trips
    assert trip.tick_ts.isoformat() == "2026-01-05T12:00:04+00:00"
    assert (trip.trip.code, trip.trip.loss_pct) == ("DRAWDOWN_DAILY", D("1.0301"))
    assert ("BreakerTripped", "DRAWDOWN_DAILY") in journal(cf, "p")
    [alert] = [a for a in seen if a.kind == "breaker_tripped"]
    assert alert.details["tick_ts"] == trip.tick_ts
    answer = cf.signal("p", T, "BUY", "98.02", qty="1")
    assert answer["risk_reason"] == "DRAWDOWN_DAILY"
    assert any("DRAWDOWN_DAILY" in r for r in cf.trading.safety.reasons())


# -- account-wide limits ---------------------------------------------------------------------

def test_an_account_loss_limit_crossed_by_two_profiles_together_halts_the_account(
        market, clock, alerts):
    steps = [[(T, "100.00", "100.02")]] * 2 + [[(T, "94.00", "94.02")]] * 3
    cf = market(steps, risk={"accounts": {"paper": {"daily_loss_limit": "100"}}})
    seen = alerts(cf)
    for pid in ("a", "b"):
        cf.create_profile(pid, "2000")
    step(cf, clock)
    for pid in ("a", "b"):
        cf.submit_order(pid, "in", T, "BUY", "10", type="LIMIT", price="100.02")
        cf.submit_order(pid, "dip", T, "BUY", "1", type="LIMIT", price="50")
    step(cf, clock)  # 2: each holds 10 @ 100.02, fee 0.51: each has lost 0.71 at 100.01
    assert cf.trading.safety.account_state("paper") is None
    step(cf, clock)  # 3: last 94.01: each -60.61: 121.22 together >= 100 (each alone not)
    st = cf.trading.safety.account_state("paper")
    assert (st.state, st.changed_by) == ("HALTED", "account-risk")
    assert st.reason.startswith("DAILY_LOSS_LIMIT")
    [halt] = [a for a in seen if a.kind == "account_halted"]
    assert halt.target == "paper"
    # both profiles' resting entries are canceled, new entries are refused
    for pid in ("a", "b"):
        [dip] = [o for o in cf.trading.list_orders(pid)[0] if o.client_order_id == "dip"]
        assert dip.status == "CANCELED"
        answer = cf.signal(pid, T, "BUY", "94.02", qty="1")
        assert answer["risk_reason"] == "TRADING_HALTED"
    assert cf.trading.safety.reasons() == [f"account paper is HALTED: {st.reason}"]
    # a person looks, and resumes the account
    cf.set_account_state("paper", "ACTIVE", "reviewed", "ops")
    assert cf.signal("a", T, "BUY", "94.02", qty="1")["risk_ok"] is True
    assert cf.trading.safety.reasons() == []


def test_the_accounts_gross_exposure_limit_counts_every_profile(market, clock):
    cf = market([[(T, "100.00", "100.02")]] * 4,
                risk={"accounts": {"paper": {"max_gross_exposure": "1500"}}})
    for pid in ("a", "b"):
        cf.create_profile(pid, "5000")
    step(cf, clock)
    cf.submit_order("a", "in", T, "BUY", "10", type="LIMIT", price="100.02")
    step(cf, clock)  # a holds 10 at 100.01: 1000.10, reported to the account
    answer = cf.signal("b", T, "BUY", "100.02", qty="6")  # 600.12 more: 1600.22 > 1500
    assert answer["risk_reason"] == "MAX_GROSS_EXPOSURE"
    assert cf.signal("b", T, "BUY", "100.02", qty="4")["risk_ok"] is True  # 1400.18


# -- flatten ---------------------------------------------------------------------------------

def test_flatten_racing_50_signals_closes_every_position_once(make_system, sqlite_url,
                                                             clock):
    # a simulated market that never runs out of ticks, however long the race takes; flat
    # (no volatility): 99.99 / 100.01, so no take-profit or stop-loss fires by itself
    cf = make_system(sqlite_url, clock=clock,
                     simulator={"symbols": {T: {"price": "100", "volatility": 0.0}}},
                     brokers={"accounts": {"paper": {"settings": SETTINGS}}},
                     risk={"mark_interval_s": 0})
    cf.create_profile("p", "100000")
    cf.create_profile("other", "10000")
    step(cf, clock)
    for i in range(5):
        cf.signal("p", T, "BUY", "100.02", qty="1", signal_id=f"before-{i}")
    cf.submit_order("p", "rest", T, "BUY", "1", type="LIMIT", price="50")
    cf.signal("other", T, "BUY", "100.02", qty="1")
    step(cf, clock)
    assert len(positions(cf, "p", "OPEN")) == 5

    stop = threading.Event()

    def ticker() -> None:  # the market goes on while everything races
        while not stop.is_set():
            step(cf, clock)

    answers: list[dict] = []
    gate = threading.Barrier(51)

    def sender(i: int) -> None:
        gate.wait()
        answers.append(cf.signal("p", T, "BUY", "100.02", qty="1", signal_id=f"race-{i}"))

    done: dict = {}

    def flattener() -> None:
        gate.wait()
        done["result"] = cf.flatten("profile", "p", client_request_id="f-1",
                                    reason="end of day")
        done["at"] = cf.clock.now()
        done["n"] = len(positions(cf, "p"))

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(50)]
    threads.append(threading.Thread(target=flattener))
    tick = threading.Thread(target=ticker)
    tick.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    tick.join(30)
    step(cf, clock, 3)
    result, answered = done["result"], done["at"]

    assert len(answers) == 50
    everything = positions(cf, "p")
    late = [a for a in answers if not a["risk_ok"]]
    assert all(a["risk_reason"] == "TRADING_HALTED" for a in late)
    assert everything and all(p.status == "CLOSED" for p in everything)
    # nothing opened after it answered
    assert len(everything) == done["n"]
    assert all(p.opened_at <= answered for p in everything)
    closed = {c["position_id"] for c in result["positions_closed"]}
    assert {p.position_id for p in everything if p.close_reason == "flatten"} == closed
    with cf.engine.connect() as c:  # each position exited exactly once
        exits = [pid for (pid,) in c.execute(
            select(s.fills.c.position_id).where(s.fills.c.kind == "EXIT",
                                                s.fills.c.profile_id == "p"))]
    assert sorted(exits) == sorted(p.position_id for p in everything)
    assert any(o["order_id"] for o in result["orders_canceled"])  # the resting one
    assert cf.ledger("p").state == "HALTED"
    assert len(positions(cf, "other", "OPEN")) == 1  # another profile is not touched


def test_flatten_is_idempotent_by_its_key(market, clock):
    cf = market([[(T, "100.00", "100.02")]] * 6)
    cf.create_profile("p", "10000")
    step(cf, clock)
    cf.signal("p", T, "BUY", "100.02", qty="1")
    step(cf, clock)
    first = cf.flatten("account", "paper", client_request_id="k", reason="drill")
    assert (first["reused"], len(first["positions_closed"])) == (False, 1)
    step(cf, clock)
    again = cf.flatten("account", "paper", client_request_id="k", reason="drill")
    assert again == {**first, "reused": True}
    with pytest.raises(Conflict):
        cf.flatten("all", client_request_id="k")
    assert cf.trading.safety.account_state("paper").state == "HALTED"
    assert [p.close_reason for p in positions(cf, "p")] == ["flatten"]
