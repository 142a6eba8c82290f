"""The adapter contract: connection backoff with jitter and a maximum, adapter loading by
name, symbol mapping; and the same behaviour through a running System."""

from __future__ import annotations

import itertools
import random

import pytest

from capflow.actors.adapters import AdapterLoadError, load_adapter
from capflow.actors.model.errors import Unavailable
from capflow.actors.model.settings import ConfigError
from capflow.brokers.base import CONNECTED, GAVE_UP, WAITING, SymbolMap
from capflow.brokers.config import AccountConfig, ConnectConfig
from capflow.brokers.events import Connected, ConnectionFailed, Disconnected
from capflow.brokers.paper import PaperBroker


def paper(clock, events, *, fails: int, attempts: int, jitter: float = 0.0, seed: int = 7,
          base: float = 1.0, cap: float = 30.0) -> PaperBroker:
    cfg = AccountConfig(settings={"fail_connects": fails},
                        connect=ConnectConfig(max_attempts=attempts, base_delay_s=base,
                                              max_delay_s=cap, jitter=jitter))
    broker = PaperBroker("acct", cfg, clock=clock, emit=events.append, rng=random.Random(seed))
    broker.init()
    return broker


def drive(broker, clock, seconds: float, step: float = 0.25) -> None:
    for _ in range(int(seconds / step)):
        clock.advance(step)
        broker.step()


def test_reconnects_after_failures_with_exponential_delays(clock):
    events = []
    broker = paper(clock, events, fails=3, attempts=5)
    broker.start()
    assert broker.connection.state == WAITING
    # 1 s after the first failure nothing has happened yet at 0.75 s
    drive(broker, clock, 0.75)
    assert broker.connection.failures == 1
    drive(broker, clock, 0.25 + 2 + 4)
    assert broker.connection.state == CONNECTED
    failed = [e for e in events if isinstance(e, ConnectionFailed)]
    assert [e.retry_in_s for e in failed] == [1.0, 2.0, 4.0]
    assert [e.attempt for e in failed] == [1, 2, 3]
    assert isinstance(events[-1], Connected) and events[-1].attempt == 4
    # each retry happened when its delay was up, not earlier
    times = [e.ts for e in events]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert gaps == [1.0, 2.0, 4.0]


def test_gives_up_after_the_maximum_with_a_clear_event(clock):
    events = []
    broker = paper(clock, events, fails=100, attempts=4)
    broker.start()
    drive(broker, clock, 60)
    assert broker.connection.state == GAVE_UP
    assert [type(e) for e in events] == [ConnectionFailed] * 3 + [Disconnected]
    assert events[-1].attempts == 4 and "simulated connection failure" in events[-1].reason
    with pytest.raises(Unavailable, match="gave up after 4 attempts"):
        broker.require_connected()
    drive(broker, clock, 600)  # and it stays down: no attempt after giving up
    assert len(events) == 4


def test_jitter_stays_in_bounds_and_delays_are_capped(clock):
    events = []
    broker = paper(clock, events, fails=100, attempts=9, jitter=0.5, base=1.0, cap=10.0)
    broker.start()
    drive(broker, clock, 400)
    delays = broker.connection.delays
    assert len(delays) == 8
    for n, d in enumerate(delays, start=1):
        nominal = min(10.0, 2 ** (n - 1))
        assert 0.5 * nominal <= d <= 1.5 * nominal
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule


def test_lost_connection_is_retried(clock):
    events = []
    broker = paper(clock, events, fails=0, attempts=3)
    broker.start()
    assert broker.connected
    broker.connection_lost("socket closed")
    assert broker.connection.state == WAITING
    drive(broker, clock, 1.0)
    assert broker.connected
    assert [type(e) for e in events] == [Connected, ConnectionFailed, Connected]


@pytest.mark.parametrize("path, needle", [
    ("brokers.paper:NoSuchBroker", "has no class 'NoSuchBroker'"),
    ("brokers.nowhere:PaperBroker", "cannot import module 'brokers.nowhere'"),
    ("brokers.paper", "expected 'package.module:Class'"),
    ("brokers.paper:ZERO", "is not a brokers.base.BrokerAdapter"),
])
def test_a_wrong_adapter_name_is_a_clear_error(path, needle):
    with pytest.raises(AdapterLoadError) as info:
        load_adapter(path)
    assert path in str(info.value) and needle in str(info.value)


def test_a_wrong_adapter_name_stops_start_up(make_system, sqlite_url):
    with pytest.raises(ConfigError, match=r"brokers\.paper:PaperBrokr"):
        make_system(sqlite_url, brokers={"accounts": {
            "paper": {"adapter": "brokers.paper:PaperBrokr"}}})


def test_load_adapter_finds_the_paper_broker():
    assert load_adapter("brokers.paper:PaperBroker") is PaperBroker


def test_symbol_map_translates_both_ways():
    sm = SymbolMap({"BTCUSDT": "XBT/USDT"})
    assert sm.to_broker("BTCUSDT") == "XBT/USDT"
    assert sm.from_broker("XBT/USDT") == "BTCUSDT"
    assert sm.to_broker("ETHUSDT") == "ETHUSDT"
    with pytest.raises(ConfigError):
        SymbolMap({"A": "X", "B": "X"})


def test_a_system_whose_broker_gives_up_refuses_orders(make_system, sqlite_url, clock):
    cf = make_system(sqlite_url, clock=clock, brokers={"accounts": {"paper": {
        "settings": {"fail_connects": 100},
        "connect": {"max_attempts": 3, "base_delay_s": 1.0, "jitter": 0.0}}}})
    cf.create_profile("p", "10000")
    status = cf.accounts.status["paper"]
    for _ in range(10):  # the account manager's step runs on every tick
        clock.advance(1)
        cf.advance(1)
    assert status.state == GAVE_UP
    assert [type(e).__name__ for e in status.connection_events] == [
        "ConnectionFailed", "ConnectionFailed", "Disconnected"]
    r = cf.signal("p", "BTCUSDT", "BUY", "65000", qty="0.01")
    assert (r["risk_ok"], r["risk_reason"]) == (False, "BROKER_DISCONNECTED")
    with pytest.raises(Unavailable, match="gave_up"):
        cf.submit_order("p", "o-1", "BTCUSDT", "BUY", "0.01")
    assert cf.ledger("p").available == 10000


def test_adapters_load_by_their_package_name_and_by_the_name_of_before():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the current name: no warning
        assert load_adapter("capflow.brokers.paper:PaperBroker") is PaperBroker
    with pytest.warns(DeprecationWarning, match=r"capflow\.brokers\.paper"):
        assert load_adapter("brokers.paper:PaperBroker") is PaperBroker
