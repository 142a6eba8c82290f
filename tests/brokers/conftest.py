"""Fixtures of the broker tests: a venue emulator with a BTCUSDT market, once Bybit and
once Bitget, and its key in the environment variables a live account names
(tests/brokers/venue_kit.py)."""

from __future__ import annotations

import pytest

from .venue_kit import KEY_ENV, PASSPHRASE_ENV, SECRET_ENV, VENUES, connected, live_brokers


def _venue(name: str):
    with VENUES[name](balances={"USDT": "10000"}) as v:
        v.set_price("BTCUSDT", "30000.00", "30000.10")
        yield v


@pytest.fixture(params=sorted(VENUES))
def venue(request):
    yield from _venue(request.param)


@pytest.fixture
def bybit_venue():
    """Bybit's emulator alone, for tests of what only Bybit documents (its endpoints'
    limits, its paths): a module names it as its `venue`."""
    yield from _venue("bybit")


@pytest.fixture
def venue_keys(monkeypatch):
    """The venue's key, secret and passphrase in the environment variables the account
    names."""
    monkeypatch.setenv(KEY_ENV, "venue-key")
    monkeypatch.setenv(SECRET_ENV, "venue-secret")
    monkeypatch.setenv(PASSPHRASE_ENV, "venue-pass")


@pytest.fixture
def live(make_system, sqlite_url, venue, venue_keys):
    """A capflow on the venue with its live account connected and a profile "p" of 5000
    USDT. The simulator keeps its symbols: those of the account's table are the venue's."""
    cf = connected(make_system(sqlite_url, brokers=live_brokers(
        venue, symbols={"BTCUSDT": "BTC/USDT"})))
    cf.create_profile("p", "5000")
    return cf
