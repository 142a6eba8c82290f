"""A semi-live account's hard cap (`max_live_capital`), and the environment names bots
already use (`ENVIRONMENT`, `AUDIT_LOG_PATH`, `BROKER_MODE`, `DATABASE_URL` when opted in)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from capflow.actors.config import load_config
from capflow.actors.model.errors import Denied, NotFound
from capflow.actors.model.settings import ConfigError
from capflow.actors.system import System
from capflow.brokers.paper import PaperBroker


class LiveLikeBroker(PaperBroker):
    """A paper broker that says it is live: what BROKER_MODE checks is the class's word."""

    live = True


LIVE_LIKE = f"{__name__}:LiveLikeBroker"


# -- the environment names --------------------------------------------------------------

def test_the_names_bots_use_are_read_and_capflow_names_win():
    cfg = load_config(env={"ENVIRONMENT": "staging", "AUDIT_LOG_PATH": "/var/log/s.jsonl",
                           "BROKER_MODE": "paper"})
    assert (cfg.environment, cfg.oms.audit_log, cfg.broker_mode) == (
        "staging", "/var/log/s.jsonl", "paper")
    # text stays text, even when it reads as a number or a boolean
    cfg = load_config(env={"ENVIRONMENT": "2024", "AUDIT_LOG_PATH": "true"})
    assert (cfg.environment, cfg.oms.audit_log) == ("2024", "true")
    cfg = load_config(env={"ENVIRONMENT": "staging", "CAPFLOW_ENVIRONMENT": "prod"})
    assert cfg.environment == "prod"


def test_broker_mode_must_name_a_mode():
    with pytest.raises(ConfigError, match=r"BROKER_MODE.*'paper', 'live'.*'yes'"):
        load_config(env={"BROKER_MODE": "yes"})


def test_database_url_is_read_only_when_the_config_opts_in():
    url = "postgresql+psycopg://app:secret@db.example/app"
    assert load_config(env={"DATABASE_URL": url}).storage.url == "sqlite:///data/capflow.db"
    opted = {"DATABASE_URL": url, "CAPFLOW_STORAGE__URL_FROM_DATABASE_URL": "true"}
    assert load_config(env=opted).storage.url == url
    assert load_config(env={**opted, "CAPFLOW_STORAGE__URL": "sqlite:///x.db"}).storage.url \
        == "sqlite:///x.db"


def _system(tmp_path, env: dict[str, str], **brokers) -> System:
    cfg = load_config(env=env, storage={"durable": False},
                      simulator={"mode": "step"},
                      oms={"audit_log": str(tmp_path / "signals.jsonl")},
                      brokers=brokers or {})
    return System(cfg)


def test_broker_mode_live_never_turns_live_trading_on_by_itself(tmp_path):
    system = _system(tmp_path, {"BROKER_MODE": "live"})
    with pytest.raises(ConfigError, match=r"BROKER_MODE.*'live'.*all paper.*adapter"):
        system.start()
    assert system.started_at is None  # nothing half-started


def test_broker_mode_paper_refuses_a_live_account_and_agrees_with_health(tmp_path):
    accounts = {"accounts": {"paper": {}, "venue": {"adapter": LIVE_LIKE}}}
    system = _system(tmp_path, {"BROKER_MODE": "paper"}, **accounts)
    with pytest.raises(ConfigError, match=r"BROKER_MODE.*'paper'.*live \(venue\)"):
        system.start()
    system = _system(tmp_path, {"BROKER_MODE": "live"}, **accounts).start()
    try:
        assert system.accounts.mode == "live"
    finally:
        system.stop()


# -- the hard cap of a semi-live account --------------------------------------------------

CAPPED = {"accounts": {"paper": {"initial_cash": "1000000", "max_live_capital": "100",
                                 "currency": "EUR"}}}


def test_max_live_capital_caps_every_profile_of_the_account_together(make_system,
                                                                     sqlite_url):
    system = make_system(sqlite_url, brokers=CAPPED)
    system.create_profile("a", "60", currency="EUR")
    with pytest.raises(Denied) as err:
        system.create_profile("b", "40.01", currency="EUR")
    assert err.value.code == "INSUFFICIENT_CAPITAL"
    assert err.value.details["available"] == D("40.00")
    assert err.value.details["max_live_capital"] == D("100")
    assert "max_live_capital" in err.value.message
    with pytest.raises(NotFound):
        system.ledger("b")  # nothing half-made
    system.create_profile("b", "40", currency="EUR")
    with pytest.raises(Denied):
        system.deposit("a", "0.01", "d1")
    system.withdraw("b", "10", "w1")
    assert system.deposit("a", "10", "d2").ledger.allocated == D("70.00")
    # the cap holds across a restart, whatever the account's cash says
    system.stop()
    again = make_system(sqlite_url, brokers=CAPPED)
    with pytest.raises(Denied):
        again.create_profile("c", "0.01", currency="EUR")


@pytest.mark.parametrize("bad", ["-1", "nan", "inf"])
def test_max_live_capital_must_be_a_number_not_below_zero(bad):
    with pytest.raises(ConfigError, match="max_live_capital"):
        load_config(env={}, brokers={"accounts": {"paper": {"max_live_capital": bad}}})
