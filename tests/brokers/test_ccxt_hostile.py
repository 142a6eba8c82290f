"""The ccxt spot adapter against a hostile or broken venue (the Bybit emulator made to
answer what a real venue should not) and a careless configuration: numbers that are not
amounts, settings that are not durations."""

from __future__ import annotations

import pytest

from capflow.actors.model.settings import ConfigError
from capflow.brokers.ccxt_venue import CcxtSpotBroker
from capflow.brokers.config import AccountConfig

ADAPTER = "capflow.brokers.ccxt_venue:CcxtSpotBroker"
KEYS = {"exchange": "bybit", "api_key_env": "A", "api_secret_env": "B"}


@pytest.mark.parametrize("setting", ["timeout_s", "poll_interval_s", "price_interval_s",
                                     "stale_after_s", "reconcile_every_s"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), "nan", 1e12])
def test_a_duration_that_is_no_number_of_seconds_is_refused_at_load(setting, value):
    # TOML has nan and inf; a worker that waits nan seconds, a connect timeout of inf ms
    # or prices that never go stale are not settings anyone meant
    with pytest.raises(ConfigError, match=setting):
        CcxtSpotBroker.check_config("live", AccountConfig(
            adapter=ADAPTER, settings={**KEYS, setting: value}))


@pytest.mark.parametrize("settings, named", [
    ({"taker_fee": "abc"}, "taker_fee"), ({"maker_fee": "-0.001"}, "maker_fee"),
    ({"taker_fee": "NaN"}, "taker_fee"), ({"lookups_before_resend": 0},
                                          "lookups_before_resend")])
def test_fee_rates_and_lookups_are_checked_at_load_not_at_start(settings, named):
    with pytest.raises(ConfigError, match=named):
        CcxtSpotBroker.check_config("live", AccountConfig(
            adapter=ADAPTER, settings={**KEYS, **settings}))
