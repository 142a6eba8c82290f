"""The metrics endpoint of an embedded System with the paper account: Prometheus' text
over real HTTP, one registry per System, state read at scrape time, closed on stop."""

from __future__ import annotations

import urllib.error
import urllib.request

import prometheus_client
import pytest

from capflow.actors.model.settings import ConfigError
from capflow.protocol.system_ops import health

from ..metrics_kit import scrape, value

METRICS = {"listen": "127.0.0.1:0"}


def test_the_endpoint_is_off_unless_configured(make_system, sqlite_url):
    cf = make_system(sqlite_url)
    assert cf.metrics is None and cf.metrics_address is None
    assert health(cf, 0.0, "paper", False)["metrics"] is None


def test_a_scrape_parses_and_shows_the_paper_account_and_health(make_system, sqlite_url):
    cf = make_system(sqlite_url, metrics=METRICS)
    host, port = cf.metrics_address.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0  # port 0: one was picked
    assert health(cf, 0.0, "paper", False)["metrics"] == cf.metrics_address
    cf.create_profile("alpha", "1000")
    got = scrape(cf)
    assert value(got, "capflow_account_connected", account="paper") == 1
    assert value(got, "capflow_health", status="ok") == 1
    assert value(got, "capflow_health", status="degraded") == 0
    assert value(got, "capflow_profiles") == 1
    assert value(got, "capflow_trading_halted") == 0
    assert value(got, "capflow_alerts_active", source="profile") == 0
    # the paper broker neither prices from a venue nor measures order latency
    assert value(got, "capflow_account_prices_age_seconds", account="paper") is None
    assert value(got, "capflow_order_ack_latency_seconds_count", account="paper") is None


def test_an_automatic_state_change_shows_as_an_active_alert_and_degraded_health(
        make_system, sqlite_url):
    cf = make_system(sqlite_url, metrics=METRICS)
    cf.create_profile("alpha", "1000")
    cf.set_state("alpha", "REDUCE_ONLY", "the venue disagrees", changed_by="reconcile")
    got = scrape(cf)
    assert value(got, "capflow_alerts_active", source="profile") == 1
    assert value(got, "capflow_health", status="degraded") == 1
    cf.set_state("alpha", "ACTIVE", "reviewed")
    got = scrape(cf)
    assert value(got, "capflow_alerts_active", source="profile") == 0
    assert value(got, "capflow_health", status="ok") == 1
    cf.set_global_state("HALTED", "maintenance")
    assert value(scrape(cf), "capflow_trading_halted") == 1


def test_two_systems_in_one_process_each_have_their_own_registry(make_system, tmp_path):
    a = make_system(f"sqlite:///{tmp_path}/a.db", metrics=METRICS)
    b = make_system(f"sqlite:///{tmp_path}/b.db", metrics=METRICS)
    assert a.metrics_address != b.metrics_address
    assert a.metrics.registry is not b.metrics.registry
    a.create_profile("alpha", "1000")
    for pid in ("x", "y"):
        b.create_profile(pid, "1000")
    assert value(scrape(a), "capflow_profiles") == 1
    assert value(scrape(b), "capflow_profiles") == 2
    # nothing went to the library's global registry
    names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not any(n.startswith("capflow_") for n in names)


def test_stop_closes_the_endpoint(make_system, sqlite_url):
    cf = make_system(sqlite_url, metrics=METRICS)
    url = f"http://{cf.metrics_address}/metrics"
    cf.stop()
    assert cf.metrics is None
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)


@pytest.mark.parametrize("listen, says", [
    ("0.0.0.0:9464", "not a loopback address"),
    ("10.1.2.3:9464", "not a loopback address"),
    ("127.0.0.1", "host:port"),
    ("127.0.0.1:99999", "host:port"),
])
def test_a_listen_address_that_is_not_loopback_or_not_host_port_is_refused(
        make_system, listen, says):
    with pytest.raises(ConfigError, match=says):
        make_system(metrics={"listen": listen})


def test_a_remote_address_may_be_allowed_explicitly(make_system):
    from capflow.actors.config import load_config

    cfg = load_config(env={}, metrics={"listen": "0.0.0.0:0", "allow_remote": True})
    assert cfg.metrics.address == ("0.0.0.0", 0)
