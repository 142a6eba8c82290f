"""The gateway's settings for its cache budgets, watchdog and heartbeats: defaults, and
combinations refused at start with the setting named."""

from __future__ import annotations

import pytest

from capflow.actors.config import load_config
from capflow.actors.model.settings import ConfigError


def test_defaults():
    s = load_config(env={}).server
    assert (s.dedup_max_bytes, s.dedup_client_max_bytes) == (64 << 20, 16 << 20)
    assert (s.watchdog_stall_s, s.heartbeat_ivl_s, s.heartbeat_timeout_s) == (30, 5, 15)


def test_settings_from_the_environment():
    s = load_config(env={"CAPFLOW_SERVER__DEDUP_MAX_BYTES": str(8 << 20),
                         "CAPFLOW_SERVER__DEDUP_CLIENT_MAX_BYTES": str(1 << 20),
                         "CAPFLOW_SERVER__WATCHDOG_STALL_S": "2.5",
                         "CAPFLOW_SERVER__HEARTBEAT_IVL_S": "0"}).server
    assert (s.dedup_max_bytes, s.dedup_client_max_bytes) == (8 << 20, 1 << 20)
    assert (s.watchdog_stall_s, s.heartbeat_ivl_s) == (2.5, 0)


@pytest.mark.parametrize(("server", "needle"), [
    ({"dedup_client_max_bytes": 128 << 20}, "dedup_client_max_bytes is above"),
    ({"dedup_max_bytes": 1000}, "dedup_max_bytes"),
    ({"dedup_max": 0}, "dedup_max"),
    ({"watchdog_stall_s": 0}, "watchdog_stall_s"),
    ({"heartbeat_ivl_s": 10, "heartbeat_timeout_s": 5}, "heartbeat_timeout_s is below"),
    ({"heartbeat_timeout_s": 10_000}, "heartbeat_timeout_s"),
])
def test_refused_settings_name_themselves(server, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(env={}, server=server)
