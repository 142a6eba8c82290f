"""The allocation service through a real System (SQLite, real actors): reservations
capped by the quote under a real race, TTL expiry and idempotency across restarts, the
fail-soft / fail-closed rules, and a broker account's cash divided among its profiles."""

from __future__ import annotations

import threading
import time
from decimal import Decimal as D

import pytest
from sqlalchemy.exc import OperationalError

from capflow.actors.liquidity import LiquidityProvider
from capflow.actors.model import messages as m
from capflow.actors.model.clock import ManualClock
from capflow.actors.model.errors import Conflict, Denied, NotFound, Unavailable

TRUSTED = {"liquidity": {"score": "100", "confidence": "100"}, "max_ticker": "1"}


def race(n: int, call) -> tuple[list, list]:
    """Run `call(i)` in `n` threads released at once: (results, exceptions)."""
    start = threading.Barrier(n)
    results: list[object] = [None] * n

    def worker(i: int) -> None:
        start.wait()
        try:
            results[i] = call(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return ([r for r in results if not isinstance(r, Exception)],
            [r for r in results if isinstance(r, Exception)])


def test_50_concurrent_reserves_exactly_the_ones_that_fit_succeed(make_system, sqlite_url):
    # allocated 10,000; score 100 -> 20 % kept back -> max_investable 8,000 (the
    # ledger's own available would allow 10,000: the formula is what binds)
    # 50 reserves of 300 at once: 8,000 // 300 = 26 fit (7,800), 24 are refused
    system = make_system(sqlite_url, allocation=TRUSTED)
    system.create_profile("p", "10000")
    assert system.quote("p", "BTCUSDT").max_investable == D("8000.00")
    ok, refused = race(50, lambda i: system.reserve("p", "BTCUSDT", "300", f"k-{i}"))
    assert len(ok) == 26 and len(refused) == 24
    for exc in refused:
        assert isinstance(exc, Denied) and exc.code == "INSUFFICIENT_CAPITAL", exc
        assert exc.details["requested"] == D("300.00")
        assert exc.details["available"] < D("300.00")  # what was left when it came
        assert exc.details["decision"]["max_investable"] == exc.details["available"]
    led = system.ledger("p")
    assert led.held == D("7800.00") and led.available == D("2200.00")
    assert len({r.reservation.reservation_id for r in ok}) == 26
    assert system.audit("p").ok  # and the rows agree with the ledger
    assert system.quote("p", "BTCUSDT").max_investable == D("200.00")  # 8,000 - 7,800


def test_ttl_expiry_on_the_ledgers_timer_and_across_a_restart(make_system, sqlite_url):
    clock = ManualClock()
    system = make_system(sqlite_url, clock=clock, allocation=TRUSTED)
    system.create_profile("p", "10000")
    seen: list[m.Event] = []
    system.bus.subscribe(lambda events: seen.extend(
        e for e in events if isinstance(e, m.ReservationExpired)))
    a = system.reserve("p", "BTCUSDT", "1000", "a", ttl_s=60).reservation
    b = system.reserve("p", "BTCUSDT", "2000", "b", ttl_s=600).reservation
    assert system.quote("p", "BTCUSDT").reservations == D("3000.00")
    clock.advance(59)
    system.run_timers()
    assert system.ledger("p").held == D("3000.00") and not seen
    clock.advance(2)
    system.run_timers()
    deadline = time.monotonic() + 5
    while system.ledger("p").held != D("2000.00") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert system.ledger("p").held == D("2000.00")
    assert [e.reservation.reservation_id for e in seen] == [a.reservation_id]
    assert seen[0].reservation.status == "EXPIRED"
    with pytest.raises(NotFound):
        system.release("p", a.reservation_id)
    # b expires while the server is down: the restart releases it
    system.stop()
    clock.advance(600)
    again = make_system(sqlite_url, clock=clock, allocation=TRUSTED)
    assert again.ledger("p").held == D("0.00")
    with pytest.raises(NotFound):
        again.release("p", b.reservation_id)
    assert again.quote("p", "BTCUSDT").reservations == D("0.00")
    assert again.audit("p").ok


def test_reserve_idempotency_across_a_restart(make_system, sqlite_url):
    system = make_system(sqlite_url, allocation=TRUSTED)
    system.create_profile("p", "10000")
    first = system.reserve("p", "BTCUSDT", "500", "key-1", ttl_s=3600)
    system.stop()
    again = make_system(sqlite_url, allocation=TRUSTED)
    repeat = again.reserve("p", "BTCUSDT", "500", "key-1", ttl_s=3600)
    assert repeat.reused is True
    assert repeat.reservation.reservation_id == first.reservation.reservation_id
    assert again.ledger("p").held == D("500.00")  # not twice
    with pytest.raises(Conflict):
        again.reserve("p", "BTCUSDT", "501", "key-1", ttl_s=3600)
    with pytest.raises(Conflict):
        again.reserve("p", "ETHUSDT", "500", "key-1", ttl_s=3600)


class HangingLiquidity(LiquidityProvider):
    """A provider whose service never answers (until the test lets it go)."""

    release = threading.Event()

    def get(self, symbol):
        self.release.wait(30)
        return None


def test_a_hanging_liquidity_provider_gives_the_fallback_within_its_timeout(make_system,
                                                                           sqlite_url):
    cfg = {"liquidity": {"provider": f"{__name__}:HangingLiquidity"},
           "liquidity_timeout_s": 0.3, "max_ticker": "1"}
    system = make_system(sqlite_url, allocation=cfg)
    system.create_profile("p", "10000")
    HangingLiquidity.release.clear()
    try:
        t0 = time.monotonic()
        d = system.quote("p", "BTCUSDT")
        took = time.monotonic() - t0
        assert 0.25 <= took < 2.0, took
        assert d.used_fallback is True
        assert d.reserved_cash_pct == D("0.60") and d.max_investable == D("4000.00")
        assert any("timeout" in line for line in d.reasoning)
        # and a reservation is not held up either
        r = system.reserve("p", "BTCUSDT", "4000", "r1")
        assert r.reservation.amount == D("4000.00")
        with pytest.raises(Denied):
            system.reserve("p", "BTCUSDT", "0.01", "r2")  # 4000 - 4000 = 0 < 50
    finally:
        HangingLiquidity.release.set()


def test_account_cash_unknown_counts_as_zero(make_system, sqlite_url):
    system = make_system(sqlite_url, allocation={**TRUSTED, "account_timeout_s": 0.2})
    system.create_profile("p", "10000")
    assert system.quote("p", "BTCUSDT").account_cash == D("1000000.00")
    # the account manager gets stuck inside its adapter (a broker that hangs)
    adapter = system.accounts.managers["paper"].proxy().adapter.get()
    stuck, real_step = threading.Event(), adapter.step
    adapter.step = lambda: stuck.wait(30)
    sync = threading.Thread(target=system.trading.settle, args=(30,))
    sync.start()
    try:
        time.sleep(0.3)
        with pytest.raises(Denied) as err:
            system.quote("p", "BTCUSDT")
        assert err.value.code == "INSUFFICIENT_CAPITAL"
        decision = err.value.details["decision"]
        assert decision["max_investable"] == D("0.00")
        assert decision["limited_by"] == ["ACCOUNT_CASH"]
        assert any("cash unknown (timeout" in line for line in decision["reasoning"])
    finally:
        adapter.step = real_step
        stuck.set()
        sync.join(30)
    assert system.quote("p", "BTCUSDT").account_cash == D("1000000.00")


def test_the_quote_sees_the_accounts_cash_change_with_an_order(make_system, sqlite_url):
    system = make_system(sqlite_url, allocation=TRUSTED)
    system.create_profile("p", "10000")
    assert system.quote("p", "TESTUSDT").account_cash == D("1000000.00")
    # a working LIMIT order 2 @ 100 ties up 200 of the paper account's cash
    system.submit_order("p", "o1", "TESTUSDT", "BUY", "2", type="LIMIT", price="100")
    system.trading.settle(10)
    assert system.quote("p", "TESTUSDT").account_cash == D("999800.00")


def test_exposure_unknown_fails_closed(make_system, sqlite_url, monkeypatch):
    system = make_system(sqlite_url, allocation={**TRUSTED, "exposure_timeout_s": 0.2})
    system.create_profile("p", "10000")
    real = system.allocation.to_ledger

    def stuck_ledger(profile_id, cmd, callback=None):
        if isinstance(cmd, m.GetCapitalPicture):
            return None  # the ledger never answers
        return real(profile_id, cmd, callback)

    monkeypatch.setattr(system.allocation, "to_ledger", stuck_ledger)
    t0 = time.monotonic()
    with pytest.raises(Unavailable) as err:
        system.quote("p", "BTCUSDT")
    assert "exposure is unknown" in err.value.message
    assert time.monotonic() - t0 < 2.0


def test_storage_down_answers_unavailable_then_recovers(make_system, sqlite_url):
    system = make_system(sqlite_url, storage={"writer": "thread"}, allocation=TRUSTED)
    system.create_profile("p", "10000")
    executor = system.writer.executor
    real_commit = executor._commit
    down = threading.Event()
    down.set()

    def flaky(items):
        if down.is_set():
            raise OperationalError("INSERT", {}, Exception("disk I/O error"))
        return real_commit(items)

    executor._commit = flaky
    with pytest.raises(Unavailable):
        system.reserve("p", "BTCUSDT", "100", "lost")
    with pytest.raises(Unavailable) as err:
        system.quote("p", "BTCUSDT")
    assert "storage" in err.value.message
    down.clear()  # the database is back: the probe the quote sent sees it
    deadline = time.monotonic() + 10
    while True:
        try:
            d = system.quote("p", "BTCUSDT")
            break
        except Unavailable:
            assert time.monotonic() < deadline, "quotes never recovered"
            time.sleep(0.05)
    assert d.max_investable == D("8000.00")  # the failed reservation left nothing behind


# -- the account's cash divided among its profiles -------------------------------------

SMALL_ACCOUNT = {"accounts": {"paper": {"initial_cash": "10000"}}}


def test_profiles_divide_the_accounts_initial_cash(make_system, sqlite_url):
    system = make_system(sqlite_url, brokers=SMALL_ACCOUNT)
    system.create_profile("a", "6000")
    with pytest.raises(Denied) as err:
        system.create_profile("b", "4000.01")
    assert err.value.code == "INSUFFICIENT_CAPITAL"
    assert err.value.details["available"] == D("4000.00")
    assert err.value.details["account_id"] == "paper"
    with pytest.raises(NotFound):
        system.ledger("b")  # nothing half-made
    system.create_profile("b", "4000")
    with pytest.raises(Denied):
        system.deposit("a", "0.01", "d1")
    system.withdraw("a", "500", "w1")
    assert system.deposit("b", "500", "d2").ledger.allocated == D("4500.00")
    with pytest.raises(Denied):
        system.create_profile("c", "0.01")
    # another currency is not a share of this account's cash
    system.create_profile("e", "100", currency="EUR")
    d = system.quote("e", "BTCUSDT")  # nor is the USDT cash a cap of its quotes
    assert d.account_cash is None and d.max_investable == D("100.00")
    assert "ACCOUNT_CASH" not in d.limited_by
    assert any("another currency" in line for line in d.reasoning)
    # the division survives a restart
    system.stop()
    again = make_system(sqlite_url, brokers=SMALL_ACCOUNT)
    with pytest.raises(Denied):
        again.create_profile("c", "0.01")
    again.withdraw("b", "1", "w2")
    again.create_profile("c", "1")


def test_concurrent_creations_and_deposits_never_overallocate_the_account(make_system,
                                                                          sqlite_url):
    system = make_system(sqlite_url, brokers=SMALL_ACCOUNT)
    system.create_profile("base", "2000")
    ok, refused = race(24, lambda i: system.create_profile(f"p{i}", "1000") if i % 2
                       else system.deposit("base", "1000", f"d{i}"))
    assert len(ok) == 8, refused  # (10,000 - 2,000) / 1,000
    assert all(isinstance(e, Denied) and e.code == "INSUFFICIENT_CAPITAL" for e in refused)
    total = sum((b.allocated for b in system.store.snapshots().values()), D(0))
    assert total == D("10000.00")


def test_a_creation_with_an_unknown_outcome_keeps_its_claim(make_system, sqlite_url):
    # the commit takes longer than the caller waits: the creation times out, yet it is
    # made; the account must not give the same cash to another profile meanwhile
    system = make_system(sqlite_url, storage={"writer": "thread"},
                         ledger={"call_timeout_s": 1}, brokers=SMALL_ACCOUNT)
    executor = system.writer.executor
    real_commit = executor._commit
    slow = threading.Event()
    slow.set()

    def stalled(items):
        if slow.is_set():
            time.sleep(2)
        return real_commit(items)

    executor._commit = stalled
    with pytest.raises(Exception) as err:
        system.create_profile("a", "10000")
    assert getattr(err.value, "code", None) == "TIMEOUT"
    slow.clear()
    assert system.writer.flush(10)
    assert system.store.snapshots()["a"].allocated == D("10000.00")  # it was made
    with pytest.raises(Denied) as denied:
        system.create_profile("b", "10000")
    assert denied.value.code == "INSUFFICIENT_CAPITAL"
    assert sum((b.allocated for b in system.store.snapshots().values()), D(0)) == D("10000")
