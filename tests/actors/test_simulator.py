"""The market simulator: deterministic GBM ticks, quantization, CSV replay of ticks and
bars, and the actor shell (subscribers, publish hook, price board, real-time ticks)."""

from __future__ import annotations

import itertools
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pykka
import pytest

from capflow.actors.model.clock import ManualClock
from capflow.actors.model.market import SECONDS_PER_YEAR, GbmProcess, MarketSimulator
from capflow.actors.model.replay import CsvReplay
from capflow.actors.model.settings import SimulatorConfig, SymbolConfig
from capflow.actors.model.ticks import Tick
from capflow.actors.simulator import MarketSimulatorActor

D = Decimal
START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def cfg(**fields) -> SimulatorConfig:
    fields.setdefault("mode", "step")
    fields.setdefault("tick_interval_s", 1.0)
    return SimulatorConfig(**fields)


def run(config: SimulatorConfig, steps: int) -> list[list[Tick]]:
    sim = MarketSimulator(config, START)
    return [sim.step() for _ in range(steps)]


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture
def start_actor():
    """Start simulator actors; every one is stopped at the end of the test."""
    refs: list[pykka.ActorRef] = []

    def start(config: SimulatorConfig, publish=None, clock=None):
        ref, board = MarketSimulatorActor.start_with_board(
            config, clock or ManualClock(START), publish)
        refs.append(ref)
        return ref, board

    yield start
    for ref in reversed(refs):
        ref.stop()


# -- determinism and the price process ---------------------------------------------------


def test_same_seed_and_config_replay_the_same_ticks_another_seed_does_not():
    a = run(cfg(seed=7), 1000)
    b = run(cfg(seed=7), 1000)
    assert a == b
    assert len(a) == 1000 and all(len(batch) == 3 for batch in a)
    c = run(cfg(seed=8), 1000)
    assert c[0] == a[0]  # both start at the configured prices
    assert c[-1] != a[-1]
    assert [t.last for batch in c for t in batch] != [t.last for batch in a for t in batch]


def test_a_symbols_stream_does_not_depend_on_the_other_symbols():
    alone = run(cfg(seed=3, symbols={"BBB": SymbolConfig(D("100"))}), 300)
    sim = MarketSimulator(cfg(seed=3, symbols={"AAA": SymbolConfig(D("5")),
                                               "BBB": SymbolConfig(D("100"))}), START)
    together = [sim.step() for _ in range(300)]
    assert [[t for t in batch if t.symbol == "BBB"] for batch in together] == alone


def test_the_random_stream_of_a_symbol_is_the_same_in_every_process():
    code = ("from capflow.actors.model.market import GbmProcess\n"
            "p = GbmProcess(100.0, 0.1, 0.5, seed=11, symbol='BTCUSDT')\n"
            "print(repr([p.next_mid(0.01) for _ in range(5)]))")
    here = GbmProcess(100.0, 0.1, 0.5, seed=11, symbol="BTCUSDT")
    expected = repr([here.next_mid(0.01) for _ in range(5)])
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == expected
    other = GbmProcess(100.0, 0.1, 0.5, seed=11, symbol="ETHUSDT")
    assert repr([other.next_mid(0.01) for _ in range(5)]) != expected


def test_zero_volatility_and_drift_keep_the_mid_exactly_constant():
    p = GbmProcess(123.456, 0.0, 0.0, seed=1, symbol="X")
    assert all(p.next_mid(1 / 365) == 123.456 for _ in range(1000))
    batches = run(cfg(symbols={"X": SymbolConfig(D("123.456"), volatility=0.0,
                                                 price_places=3)}), 500)
    assert {(t.bid, t.ask, t.last) for [t] in batches} == {
        (batches[0][0].bid, batches[0][0].ask, D("123.456"))}


def test_the_log_return_has_the_ito_correction():
    p = GbmProcess(1.0, 0.1, 0.6, seed=9, symbol="X")
    returns = []
    for _ in range(20_000):
        p.mid = 1.0
        returns.append(math.log(p.next_mid(1.0)))
    # E[log return] = drift - vol**2 / 2 a year; standard error 0.6 / sqrt(20000)
    assert abs(statistics.fmean(returns) - (0.1 - 0.6**2 / 2)) < 0.02


@pytest.mark.parametrize("drift", [0.05, -0.3, 1.5])
def test_without_volatility_the_log_return_per_year_is_the_drift(drift):
    dt = 1 / 365
    p = GbmProcess(100.0, drift, 0.0, seed=5, symbol="X")
    n = 1000
    for _ in range(n):
        mid = p.next_mid(dt)
    assert abs(math.log(mid / 100.0) / (n * dt) - drift) < 1e-9


def test_sample_volatility_of_the_ticks_matches_the_configured_one():
    hour = 3600.0
    config = cfg(seed=2024, dt_s=hour, symbols={
        "VOL": SymbolConfig(D("65000"), volatility=0.6, spread_bps=0.0, price_places=2)})
    sim = MarketSimulator(config, START)
    lasts = [float(sim.step()[0].last) for _ in range(20_000)]
    returns = [math.log(b / a) for a, b in itertools.pairwise(lasts)]
    annualized = statistics.stdev(returns) / math.sqrt(hour / SECONDS_PER_YEAR)
    assert abs(annualized / 0.6 - 1) < 0.10


# -- ticks -------------------------------------------------------------------------------


def test_first_tick_at_the_start_price_then_quantized_ticks_with_seq_and_ts():
    config = cfg(dt_s=0.5, symbols={
        "BBB": SymbolConfig(D("0.123456"), volatility=2.0, price_places=5, qty_places=2,
                            liquidity=D("12.345")),
        "AAA": SymbolConfig(D("101.25"), volatility=0.9, spread_bps=10.0, price_places=2),
        "CCC": SymbolConfig(D("10"), spread_bps=0.0, price_places=2),
    })
    sim = MarketSimulator(config, START)
    assert sim.symbols() == ["AAA", "BBB", "CCC"]
    assert sim.last("AAA") is None and sim.now == START
    aaa, bbb, ccc = sim.step()
    assert (aaa.symbol, bbb.symbol, ccc.symbol) == ("AAA", "BBB", "CCC")
    # mid 101.25, half spread 10 bps / 2 = 0.050625: bid rounded down, ask up
    assert (aaa.bid, aaa.ask, aaa.last) == (D("101.19"), D("101.31"), D("101.25"))
    assert (bbb.bid, bbb.ask, bbb.last) == (D("0.12344"), D("0.12347"), D("0.12346"))
    assert bbb.liquidity == D("12.34")
    assert (ccc.bid, ccc.ask) == (D("10.00"), D("10.01"))  # no spread: still one step
    assert sim.last("AAA") == aaa and sim.now == aaa.ts == START + timedelta(seconds=0.5)

    places = {"AAA": 2, "BBB": 5, "CCC": 2}
    for k in range(2, 302):
        batch = sim.step()
        assert [t.symbol for t in batch] == ["AAA", "BBB", "CCC"]
        for t in batch:
            step = D(1).scaleb(-places[t.symbol])
            assert t.seq == k
            assert t.ts == START + timedelta(seconds=0.5 * k)
            assert t.ask - t.bid >= step and t.bid > 0
            assert t.bid <= t.last <= t.ask
            for price in (t.bid, t.ask, t.last):
                assert price.as_tuple().exponent == -places[t.symbol]
    assert sim.last("AAA").last != D("101.25")  # the price moved


def test_ensure_symbol_starts_an_unknown_symbol_at_its_price_and_leaves_known_ones():
    config = cfg(new_symbol_volatility=0.3, new_symbol_liquidity=D("77"),
                 symbols={"AAA": SymbolConfig(D("50"))})
    sim = MarketSimulator(config, START)
    [first] = sim.step()
    assert sim.ensure_symbol("AAA", D("1")) is False
    assert sim.ensure_symbol("NEWUSDT", D("0.0012345")) is True
    assert sim.ensure_symbol("NEWUSDT", D("999")) is False
    assert sim.ensure_symbol("BIG", D("1234.5")) is True
    assert sim.ensure_symbol("LONG", D("1.123456789")) is True  # at most 8 places
    assert sim.symbols() == ["AAA", "BIG", "LONG", "NEWUSDT"]
    spec = sim.spec("NEWUSDT")
    assert (spec.drift, spec.volatility, spec.spread_bps) == (0.0, 0.3, 2.0)
    assert (spec.price_places, spec.qty_places, spec.liquidity) == (7, 6, D("77"))
    assert sim.spec("BIG").price_places == 2 and sim.spec("LONG").price_places == 8

    ticks = {t.symbol: t for t in sim.step()}
    assert ticks["AAA"].seq == 2 and ticks["AAA"].ts == first.ts + timedelta(seconds=1)
    new = ticks["NEWUSDT"]
    assert (new.seq, new.ts, new.last, new.liquidity) == (1, ticks["AAA"].ts,
                                                          D("0.0012345"), D("77"))
    assert new.bid < D("0.0012345") < new.ask and new.bid.as_tuple().exponent == -7
    assert ticks["BIG"].last == D("1234.50")
    assert ticks["LONG"].last == D("1.12345679")
    with pytest.raises(ValueError):
        sim.ensure_symbol("BAD", D("0"))
    with pytest.raises(ValueError):
        sim.ensure_symbol("", D("1"))
    with pytest.raises(ValueError):
        sim.ensure_symbol("HUGE", D("1E+20"))


# -- replay ------------------------------------------------------------------------------


TICKS_CSV = """ts,symbol,bid,ask,last,liquidity
2024-03-01T00:00:00,AAA,100.10,100.20,100.15,5
2024-03-01T00:00:00,BBB,0.00012345,0.00012350,,

2024-03-01T00:00:01Z,AAA,100.11,100.21,,
{epoch},AAA,100.12,100.22,100.2,7.5
"""
T0 = datetime(2024, 3, 1, tzinfo=UTC)
REPLAY_SYMBOLS = {"AAA": SymbolConfig(D("100"), price_places=2, liquidity=D("3"))}


def ticks_csv(tmp_path: Path) -> str:
    return write(tmp_path, "ticks.csv", TICKS_CSV.format(epoch=int(T0.timestamp()) + 2))


def test_replay_of_ticks_groups_by_ts_with_exact_prices(tmp_path):
    replay = CsvReplay(ticks_csv(tmp_path), cfg(symbols=REPLAY_SYMBOLS))
    assert not replay.exhausted
    aaa, bbb = replay.step()
    assert aaa == Tick("AAA", 1, T0, D("100.10"), D("100.20"), D("100.15"), D("5"))
    # no config: 8 places from the prices, last = the mid rounded half-even
    assert bbb == Tick("BBB", 1, T0, D("0.00012345"), D("0.00012350"), D("0.00012348"),
                       D("1000000"))
    assert str(aaa.bid) == "100.10" and str(bbb.ask) == "0.00012350"
    [second] = replay.step()
    assert second == Tick("AAA", 2, T0 + timedelta(seconds=1), D("100.11"), D("100.21"),
                          D("100.16"), D("3"))
    assert not replay.exhausted
    [third] = replay.step()
    assert (third.seq, third.ts, third.last, third.liquidity) == (
        3, T0 + timedelta(seconds=2), D("100.20"), D("7.5"))
    assert replay.exhausted
    assert replay.step() == []


BARS_CSV = """ts,symbol,open,high,low,close,volume
2024-03-01T00:00:00Z,ZZZ,5.5,5.75,5.25,5.5,8
2024-03-01T00:00:00Z,AAA,100.00,101.50,99.50,101.00,40
2024-03-01T00:01:00Z,AAA,101.00,101.20,98.75,99.00,
"""


BAR_SYMBOLS = {"AAA": SymbolConfig(D("100"), spread_bps=10.0, price_places=2,
                                  liquidity=D("3"))}
FIRST_BARS = [("AAA", 1, D("100.00")), ("AAA", 2, D("101.50")), ("AAA", 3, D("99.50")),
              ("AAA", 4, D("101.00"))]
ZZZ_BAR = [("ZZZ", 1, D("5.50")), ("ZZZ", 2, D("5.75")), ("ZZZ", 3, D("5.25")),
           ("ZZZ", 4, D("5.50"))]


def test_replay_of_bars_expands_each_bar_into_four_ticks_in_path_order(tmp_path):
    replay = CsvReplay(write(tmp_path, "bars.csv", BARS_CSV), cfg(symbols=BAR_SYMBOLS))
    group = replay.step()  # in file order: ZZZ first
    assert [(t.symbol, t.seq, t.last) for t in group] == ZZZ_BAR + FIRST_BARS
    group = group[4:] + group[:4]
    assert {t.ts for t in group} == {T0}
    assert (group[0].bid, group[0].ask) == (D("99.95"), D("100.05"))  # configured spread
    assert {t.liquidity for t in group[:4]} == {D("10")}  # volume / 4
    assert all(t.ask - t.bid == D("0.01") for t in group[4:])  # no config: one step
    assert {t.liquidity for t in group[4:]} == {D("2")}
    down = replay.step()  # close < open: open, low, high, close
    assert [t.last for t in down] == [D("101.00"), D("98.75"), D("101.20"), D("99.00")]
    assert [t.seq for t in down] == [5, 6, 7, 8]
    assert {t.ts for t in down} == {T0 + timedelta(minutes=1)}
    assert {t.liquidity for t in down} == {D("3")}  # no volume: configured liquidity
    assert replay.exhausted and replay.step() == []


@pytest.mark.parametrize(("row", "reason"), [
    ("2024-03-01T00:00:02Z,AAA,abc,100.20", "bid is not a decimal"),
    ("2024-03-01T00:00:02Z,AAA,100.30,100.20", "not below ask"),
    ("2024-03-01T00:00:02Z,AAA,100.10", "expected 4 fields"),
    ("yesterday,AAA,100.10,100.20", "neither ISO-8601"),
    ("2024-02-01T00:00:00Z,AAA,100.10,100.20", "earlier than"),
    ("2024-03-01T00:00:02Z,,100.10,100.20", "symbol is empty"),
    ("2024-03-01T00:00:02Z,AAA,-1,100.20", "greater than zero"),
    ("2024-03-01T00:00:02Z,AAA,1E+400,1E+401", "too large"),
])
def test_a_bad_row_raises_naming_the_file_and_line(tmp_path, row, reason):
    path = write(tmp_path, "bad.csv", "ts,symbol,bid,ask\n"
                                      "2024-03-01T00:00:00Z,AAA,100.10,100.20\n"
                                      "2024-03-01T00:00:01Z,AAA,100.10,100.20\n"
                                      f"{row}\n"
                                      "2024-03-01T00:00:03Z,AAA,100.10,100.20\n")
    replay = CsvReplay(path)
    assert len(replay.step()) == 1
    assert len(replay.step()) == 1  # delivered although the row after it is bad
    with pytest.raises(ValueError, match=reason) as info:
        replay.step()
    assert str(info.value).startswith(f"{path}, line 4:")
    assert replay.exhausted and replay.step() == []


def test_a_bad_bar_or_header_raises_naming_the_line(tmp_path):
    bars = write(tmp_path, "bars.csv", "ts,symbol,open,high,low,close,volume\n"
                                       "2024-03-01T00:00:00Z,AAA,100,99,98,100.5,1\n")
    with pytest.raises(ValueError, match=r"bars\.csv, line 2: inconsistent bar"):
        CsvReplay(bars)
    header = write(tmp_path, "header.csv", "ts,symbol,price\n")
    with pytest.raises(ValueError, match=r"header\.csv, line 1: unrecognized header"):
        CsvReplay(header)


def test_the_simulator_replays_and_simulates_added_symbols_along(tmp_path):
    config = cfg(dt_s=10.0, replay=ticks_csv(tmp_path), symbols=REPLAY_SYMBOLS)
    sim = MarketSimulator(config, START)
    assert sim.symbols() == [] and not sim.exhausted
    assert [(t.symbol, t.ts) for t in sim.step()] == [("AAA", T0), ("BBB", T0)]
    assert sim.now == T0
    assert sim.ensure_symbol("AAA", D("1")) is False  # already replayed
    assert sim.ensure_symbol("SIM", D("10")) is True
    second = sim.step()
    assert [(t.symbol, t.seq, t.ts) for t in second] == [
        ("AAA", 2, T0 + timedelta(seconds=1)), ("SIM", 1, T0 + timedelta(seconds=1))]
    assert second[1].last == D("10.00")
    assert not sim.exhausted
    sim.step()
    assert sim.exhausted
    [after] = sim.step()  # the replay is used up: only the simulated symbol ticks
    assert (after.symbol, after.seq, after.ts) == ("SIM", 3, T0 + timedelta(seconds=12))
    assert sim.last("AAA").seq == 3 and sim.last("BBB").seq == 1


def test_the_simulator_orders_a_replayed_group_by_symbol_keeping_each_bar_path(tmp_path):
    config = cfg(replay=write(tmp_path, "bars.csv", BARS_CSV), symbols=BAR_SYMBOLS)
    sim = MarketSimulator(config, START)
    assert [(t.symbol, t.seq, t.last) for t in sim.step()] == FIRST_BARS + ZZZ_BAR
    assert sim.symbols() == ["AAA", "ZZZ"]
    assert sim.spec("ZZZ").price_places == 2 and sim.spec("AAA") == BAR_SYMBOLS["AAA"]
    sim.close()


def test_a_simulated_symbol_moves_with_the_replayed_time_gaps(tmp_path):
    symbols = {**REPLAY_SYMBOLS,
               "DRF": SymbolConfig(D("1"), drift=50.0, volatility=0.0, price_places=8)}
    sim = MarketSimulator(cfg(dt_s=10.0, replay=ticks_csv(tmp_path), symbols=symbols), START)
    assert sim.ensure_symbol("DRF", D("100")) is True  # configured, not in the file
    assert sim.spec("DRF").drift == 50.0
    seen = []
    for _ in range(4):
        [drf] = [t for t in sim.step() if t.symbol == "DRF"]
        seen.append(drf)
    assert [t.ts - T0 for t in seen] == [timedelta(seconds=s) for s in (0, 1, 2, 12)]
    for t in seen:
        expected = 100 * math.exp(50.0 * (t.ts - T0).total_seconds() / SECONDS_PER_YEAR)
        assert abs(float(t.last) - expected) < 2e-8


def test_an_exhausted_replay_without_simulated_symbols_steps_to_nothing(tmp_path):
    sim = MarketSimulator(cfg(replay=ticks_csv(tmp_path)), START)
    assert [len(sim.step()) for _ in range(5)] == [2, 1, 1, 0, 0]
    assert sim.exhausted


# -- the actor ---------------------------------------------------------------------------


def test_advance_delivers_every_step_to_subscribers_in_order(start_actor):
    published: list[list[Tick]] = []
    ref, board = start_actor(cfg(), publish=published.append)
    sim = ref
    calls: list[tuple[str, list[Tick]]] = []
    sim.subscribe("a", lambda ticks: calls.append(("a", ticks))).get()
    sim.subscribe("b", lambda ticks: calls.append(("b", ticks))).get()
    # before any step the board quotes each symbol at its configured price (seq 0)
    opening = {t.symbol: t for t in run(cfg(), 1)[0]}
    assert {s: (t.seq, t.last) for s, t in board.items()} == {
        s: (0, t.last) for s, t in opening.items()}
    assert sim.advance(5).get() == 5
    assert [key for key, _ in calls] == ["a", "b"] * 5
    to_a = [ticks for key, ticks in calls if key == "a"]
    assert to_a == [ticks for key, ticks in calls if key == "b"] == published
    assert [[t.seq for t in batch] for batch in to_a] == [[k] * 3 for k in range(1, 6)]
    assert to_a == run(cfg(), 5)  # the same ticks as the pure simulator
    assert board == {t.symbol: t for t in to_a[-1]}
    assert sim.last("BTCUSDT").get() == board["BTCUSDT"]
    assert sim.now().get() == START + timedelta(seconds=5)

    assert sim.unsubscribe("a").get() is True
    assert sim.advance(1).get() == 1
    assert [key for key, _ in calls[10:]] == ["b"]


def test_a_raising_subscriber_or_hook_stops_neither_the_others_nor_the_actor(start_actor):
    def boom(ticks):
        raise RuntimeError("subscriber bug")

    ref, board = start_actor(cfg(), publish=boom)
    sim = ref
    got: list[list[Tick]] = []
    sim.subscribe("bad", boom).get()
    sim.subscribe("good", got.append).get()
    assert sim.advance(3).get() == 3
    assert len(got) == 3 and ref.is_alive()
    assert board["ETHUSDT"].seq == 3
    with pytest.raises(ValueError):
        sim.advance(0).get()
    with pytest.raises(ValueError):
        sim.advance(10_000_001).get()
    assert sim.advance(2).get() == 2
    assert len(got) == 5 and ref.is_alive()


def test_ensure_symbol_through_the_actor_and_the_board(start_actor):
    ref, board = start_actor(cfg(symbols={}))
    sim = ref
    assert sim.advance(3).get() == 0  # nothing to tick
    assert sim.ensure_symbol("NEWUSDT", D("2.5")).get() is True
    assert sim.ensure_symbol("NEWUSDT", D("3")).get() is False
    assert sim.symbols().get() == ["NEWUSDT"]
    assert sim.advance(2).get() == 2
    assert board["NEWUSDT"].seq == 2
    assert ref.ref.proxy().board.get() is board  # the board is the actor's own


def test_step_mode_does_not_tick_by_itself_realtime_does_until_stopped(start_actor):
    ref, board = start_actor(cfg(mode="realtime", tick_interval_s=0.02))
    sim = ref
    got: list[list[Tick]] = []
    lock = threading.Lock()

    def deliver(ticks):
        with lock:
            got.append(ticks)

    sim.subscribe("rt", deliver).get()
    time.sleep(0.05)
    # nothing ticks before start_realtime(): the board holds the opening quotes only
    assert got == [] and {t.seq for t in board.values()} == {0}
    assert sim.start_realtime().get() is True
    assert sim.start_realtime().get() is False
    deadline = time.monotonic() + 2.0
    while len(got) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(got) >= 3
    assert sim.stop_realtime().get() is True
    with lock:
        count = len(got)
    time.sleep(0.1)
    assert len(got) == count
    assert [batch[0].seq for batch in got] == list(range(1, count + 1))
    assert board["BTCUSDT"] == got[-1][0]


def test_stopping_the_actor_stops_the_realtime_thread(start_actor):
    ref, _ = start_actor(cfg(mode="realtime", tick_interval_s=0.02))
    before = {t.ident for t in threading.enumerate()}
    ref.start_realtime().get()
    [ticker] = [t for t in threading.enumerate() if t.ident not in before]
    assert ticker.daemon and ticker.is_alive()
    ref.stop()
    assert not ticker.is_alive()  # stopped and joined before stop() returned


def test_no_tick_is_delivered_after_stop_realtime(start_actor):
    ref, _ = start_actor(cfg(mode="realtime", tick_interval_s=0.02))
    sim = ref
    busy, release = threading.Event(), threading.Event()

    def slow(ticks):  # holds the actor in its first step until released
        busy.set()
        release.wait(2)

    sim.subscribe("slow", slow).get()
    sim.start_realtime().get()
    assert busy.wait(2)
    stopped = sim.stop_realtime()
    late: list[list[Tick]] = []
    subscribed = sim.subscribe("late", late.append)  # handled right after the stop
    time.sleep(0.1)  # the next tick comes due meanwhile and queues up behind them
    release.set()
    assert stopped.get() is True
    subscribed.get()
    time.sleep(0.1)
    assert late == []
