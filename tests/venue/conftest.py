"""Fixtures of the venue emulators: a started Bybit or Bitget venue, and a ccxt client on it."""

from __future__ import annotations

import pytest

from capflow.bench.venues.bitget import BitgetVenue
from capflow.bench.venues.bybit import BybitVenue


@pytest.fixture
def bybit_venue():
    """A started Bybit v5 spot venue: 10,000 USDT, BTCUSDT at 30,000.00 / 30,000.10."""
    with BybitVenue(balances={"USDT": "10000"}) as venue:
        venue.set_price("BTCUSDT", "30000.00", "30000.10")
        yield venue


@pytest.fixture
def bybit_client(bybit_venue):
    """ccxt's real bybit class pointed at the venue, markets loaded."""
    client = bybit_venue.ccxt(timeout=2000)
    client.load_markets()
    return client


@pytest.fixture
def bitget_venue():
    """A started Bitget v2 spot venue: 10,000 USDT, BTCUSDT at 30,000.00 / 30,000.10."""
    with BitgetVenue(balances={"USDT": "10000"}) as venue:
        venue.set_price("BTCUSDT", "30000.00", "30000.10")
        yield venue


@pytest.fixture
def bitget_client(bitget_venue):
    """ccxt's real bitget class pointed at the venue, markets loaded."""
    client = bitget_venue.ccxt(timeout=2000)
    client.load_markets()
    return client
