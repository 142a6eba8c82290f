"""The command line: profile commands on real storage, clear errors, call / keys."""

from __future__ import annotations

import pytest

from capflow import run


@pytest.fixture
def env(tmp_path, monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("CAPFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CAPFLOW_STORAGE__URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(argv, capsys):
    code = run.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_profile_create_list_show(env, capsys):
    code, out, _ = _run(["profile", "create", "alpha", "1500.5"], capsys)
    assert code == 0 and "available" in out and "1500.50" in out
    code, out, _ = _run(["profile", "list"], capsys)
    assert code == 0 and "alpha" in out and "1 profile(s)" in out
    code, out, _ = _run(["profile", "show", "alpha"], capsys)
    assert code == 0 and "ACTIVE" in out and "1500.50" in out


@pytest.mark.parametrize("argv, needle", [
    (["profile", "create", "alpha", "1.001"], "INVALID_ARGUMENT (allocated)"),
    (["profile", "create", "bad id", "5"], "INVALID_ARGUMENT (profile_id)"),
    (["profile", "show", "ghost"], "NOT_FOUND"),
])
def test_bad_input_is_a_clear_message_and_exit_code_2(env, capsys, argv, needle):
    code, _, err = _run(argv, capsys)
    assert code == 2 and needle in err


def test_a_bad_config_names_the_setting(env, capsys, monkeypatch):
    monkeypatch.setenv("CAPFLOW_LEDGER__MAX_LIVE", "many")
    code, _, err = _run(["profile", "list"], capsys)
    assert code == 2 and "$.ledger.max_live" in err


def test_keys_generate_writes_key_pairs_and_the_client_table(env, capsys):
    code, out, _ = _run(["keys", "generate", "bot-1", "--dir", str(env / "keys")], capsys)
    assert code == 0 and out.count("wrote ") == 4
    names = sorted(p.name for p in (env / "keys").iterdir())
    assert names == ["bot-1.key", "bot-1.key_secret", "clients.toml", "server.key",
                     "server.key_secret"]
    assert oct((env / "keys" / "server.key_secret").stat().st_mode & 0o777) == "0o600"
    assert '[clients."bot-1"]' in (env / "keys" / "clients.toml").read_text()
    code, _, err = _run(["keys", "generate", "bot-1", "--dir", str(env / "keys")], capsys)
    assert code == 2 and "already exists" in err


def _trade_one_round_trip(env):
    """A closed position in the CLI's database: BUY 10 @ 100.20, take-profit at 106."""
    from capflow.actors.clock import ManualClock
    from capflow.actors.config import load_config
    from capflow.actors.system import System

    csv = env / "ticks.csv"
    csv.write_text("ts,symbol,bid,ask\n2026-01-05T12:00:01+00:00,TESTUSDT,100.00,100.20\n"
                   "2026-01-05T12:00:02+00:00,TESTUSDT,106.00,106.20\n")
    cfg = load_config(simulator={"mode": "step", "replay": str(csv), "symbols": {}},
                      brokers={"accounts": {"paper": {"settings": {
                          "taker_fee": "0", "maker_fee": "0", "slippage_bps": "0"}}}},
                      oms={"audit_log": str(env / "signals.jsonl")},
                      # 1,010 at stake: more than the default 10 % of one ticker allows
                      allocation={"max_ticker": "1"})
    with System(cfg, clock=ManualClock()) as cf:
        cf.create_profile("alpha", "10000")
        cf.signal("alpha", "TESTUSDT", "BUY", "100", qty="10", tp_pct="5", strategy="t")
        cf.advance(2)


def test_stats_and_report_read_storage(env, capsys):
    _trade_one_round_trip(env)
    code, out, _ = _run(["stats", "--profile", "alpha", "--group-by", "strategy"], capsys)
    # 10 * (106.00 - 100.20) = 58.00, no fees
    assert code == 0
    assert "total_pnl" in out and "58.00" in out and "strategy = t" in out
    assert "tp_count" in out
    code, out, _ = _run(["report", "--profile", "alpha", "--out", str(env / "eq.png")],
                        capsys)
    assert code == 0 and "wrote" in out
    assert (env / "eq.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    code, _, err = _run(["stats", "--profile", "ghost"], capsys)
    assert code == 2 and "NOT_FOUND" in err


def test_a_wrong_adapter_class_stops_the_cli_with_its_name(env, capsys, monkeypatch):
    monkeypatch.setenv("CAPFLOW_BROKERS__ACCOUNTS__PAPER__ADAPTER", "brokers.paper:Nope")
    code, _, err = _run(["profile", "list"], capsys)
    assert code == 2 and "brokers.paper:Nope" in err and "has no class 'Nope'" in err
