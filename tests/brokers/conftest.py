"""Fixtures of the broker tests: a venue emulator with a BTCUSDT market, once Bybit and
once Bitget, and its key in the environment variables a live account names
(tests/brokers/venue_kit.py)."""

from __future__ import annotations

import pytest

from .venue_kit import KEY_ENV, PASSPHRASE_ENV, SECRET_ENV, VENUES


@pytest.fixture(params=sorted(VENUES))
def venue(request):
    with VENUES[request.param](balances={"USDT": "10000"}) as v:
        v.set_price("BTCUSDT", "30000.00", "30000.10")
        yield v


@pytest.fixture
def venue_keys(monkeypatch):
    """The venue's key, secret and passphrase in the environment variables the account
    names."""
    monkeypatch.setenv(KEY_ENV, "venue-key")
    monkeypatch.setenv(SECRET_ENV, "venue-secret")
    monkeypatch.setenv(PASSPHRASE_ENV, "venue-pass")
