"""Fixtures of the broker tests: the Bybit emulator with a BTCUSDT market, and its key in
the environment variables a live account names (tests/brokers/venue_kit.py)."""

from __future__ import annotations

import pytest

from capflow.bench.venues.bybit import BybitVenue

from .venue_kit import KEY_ENV, SECRET_ENV


@pytest.fixture
def venue():
    with BybitVenue(balances={"USDT": "10000"}) as v:
        v.set_price("BTCUSDT", "30000.00", "30000.10")
        yield v


@pytest.fixture
def venue_keys(monkeypatch):
    """The venue's key and secret in the environment variables the account names."""
    monkeypatch.setenv(KEY_ENV, "venue-key")
    monkeypatch.setenv(SECRET_ENV, "venue-secret")
