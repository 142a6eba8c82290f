"""The command line: profile commands on real storage, clear errors, call / keys."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from capflow import run


def free_endpoint() -> str:
    """A loopback endpoint where nothing listens (a port the kernel just handed out)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def env(tmp_path, monkeypatch):
    """The command line's environment: its own SQLite file, and server endpoints where
    nothing answers (never a server that happens to run on this machine)."""
    for name in list(os.environ):
        if name.startswith("CAPFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CAPFLOW_STORAGE__URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("CAPFLOW_SERVER__ENDPOINT", free_endpoint())
    monkeypatch.setenv("CAPFLOW_SERVER__EVENTS_ENDPOINT", free_endpoint())
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


def test_profile_create_again_says_that_it_exists(env, capsys):
    code, out, err = _run(["profile", "create", "alpha", "1500.5"], capsys)
    assert code == 0 and out.startswith("created profile alpha\n")
    assert "no capflow server answers" in err and "using the storage" in err
    # the same creation again: idempotent, and it says so
    code, out, _ = _run(["profile", "create", "alpha", "1500.50"], capsys)
    assert code == 0
    assert out.startswith("profile alpha already exists with these settings: nothing "
                          "changed\n")
    assert "1500.50" in out
    # other settings: a conflict, and nothing printed as if it had worked
    code, out, err = _run(["profile", "create", "alpha", "99"], capsys)
    assert code == 2 and "CONFLICT" in err and out == ""


def test_profile_list_from_the_storage_lists_every_profile(env, capsys):
    """Before, it listed the first 1000 and said "1000 profile(s)"."""
    from capflow.actors.config import load_config
    from capflow.actors.system import System

    cfg = load_config(storage={"sqlite_synchronous": "NORMAL"},
                      simulator={"mode": "step"}, oms={"audit_log": str(env / "s.jsonl")})
    with System(cfg) as cf:
        for i in range(1001):
            cf.create_profile(f"p{i:04d}", 0)
    code, out, _ = _run(["profile", "list"], capsys)
    assert code == 0 and out.endswith("\n1001 profile(s)\n")
    assert out.splitlines()[-2].split()[0] == "p1000"


#: every command that needs a server ({endpoint}: the configured one, where none runs)
NEEDS_A_SERVER = [["call", "ledger.gett", "profile_id=alpha"], ["halt"], ["resume"],
                  ["halt", "--profile", "alpha"], ["flatten", "--all"], ["events"],
                  ["top"], ["top", "--once"],
                  ["stress", "--endpoint", "{endpoint}", "--duration", "1"]]


def test_every_command_that_needs_a_server_says_at_once_that_none_answers(env):
    """Before, `call` waited 20 s (4 attempts of 5 s) and then named neither the endpoint
    nor the cause, `flatten` two minutes, and `events` waited for ever."""
    endpoint = os.environ["CAPFLOW_SERVER__ENDPOINT"]
    capflow = str(Path(sys.executable).with_name("capflow"))
    started = []
    for argv in NEEDS_A_SERVER:
        argv = [a.format(endpoint=endpoint) for a in argv]
        started.append((argv, subprocess.Popen([capflow, *argv], stdout=subprocess.PIPE,
                                               stderr=subprocess.PIPE, text=True)))
    try:
        for argv, proc in started:
            try:
                out, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                pytest.fail(f"capflow {' '.join(argv)} still waits for a server after 20 s")
            assert proc.returncode == 1, (argv, out, err)
            assert err == (f"capflow: no capflow server answers at {endpoint} (is it "
                           "running? see --endpoint)\n"), (argv, err)
            assert out == "", (argv, out)
    finally:
        for _, proc in started:  # the processes this test started, by their pids
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


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
