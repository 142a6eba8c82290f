"""The stallable paper broker of chaos runs: blocks while its stall file exists."""

from __future__ import annotations

import threading
import time

from capflow.actors.model.clock import ManualClock
from capflow.brokers.config import AccountConfig
from capflow.brokers.faults import StallablePaperBroker


def test_calls_block_while_the_stall_file_exists(tmp_path):
    stall = tmp_path / "stall"
    broker = StallablePaperBroker("paper", AccountConfig(settings={
        "stall_file": str(stall), "stall_max_s": 10}), clock=ManualClock(), emit=lambda e: None)
    broker.init()
    t0 = time.monotonic()
    broker.account_info()
    assert time.monotonic() - t0 < 0.5 and broker.stalls == 0

    stall.touch()
    threading.Timer(0.5, stall.unlink).start()
    t0 = time.monotonic()
    info = broker.account_info()
    waited = time.monotonic() - t0
    assert 0.4 < waited < 5, waited
    assert broker.stalls == 1 and info.cash == broker.config.initial_cash


def test_a_forgotten_stall_file_ends_by_itself(tmp_path):
    stall = tmp_path / "stall"
    stall.touch()
    broker = StallablePaperBroker("paper", AccountConfig(settings={
        "stall_file": str(stall), "stall_max_s": 0.3}), clock=ManualClock(), emit=lambda e: None)
    broker.init()
    t0 = time.monotonic()
    assert broker.portfolio() == []
    assert 0.25 < time.monotonic() - t0 < 3
