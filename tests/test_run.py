"""The command line: profile commands on real storage, clear errors, call / keys, stats
and the equity report (open positions priced by a running server or the stored fills)."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from capflow import run
from capflow.actors.model.clock import ManualClock


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
    assert _run(["profile", "create", "seed", "1"], capsys)[0] == 0  # a storage to read
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
    from capflow.actors.config import load_config
    from capflow.actors.model.clock import ManualClock
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


def _trade_then_hold(env, make_system):
    """In the CLI's database: a round trip that loses 1.20 (BUY 1 @ 100.20, closed at
    99.00), then 2 bought @ 100.20 and held while the market moves to 103.00 / 103.20
    (last 103.10). No fees. The System is left running; it is returned."""
    csv = env / "ticks.csv"
    csv.write_text("ts,symbol,bid,ask\n"
                   "2026-01-05T12:00:01+00:00,TESTUSDT,100.00,100.20\n"
                   "2026-01-05T12:00:02+00:00,TESTUSDT,99.00,99.20\n"
                   "2026-01-05T12:00:03+00:00,TESTUSDT,100.00,100.20\n"
                   "2026-01-05T12:00:04+00:00,TESTUSDT,103.00,103.20\n")
    clock = ManualClock()
    cf = make_system(f"sqlite:///{env}/cli.db", clock=clock,
                     server={"endpoint": "tcp://127.0.0.1:*",
                             "events_endpoint": "tcp://127.0.0.1:*"},
                     simulator={"replay": str(csv), "symbols": {}},
                     brokers={"accounts": {"paper": {"settings": {
                         "taker_fee": "0", "maker_fee": "0", "slippage_bps": "0"}}}},
                     allocation={"max_ticker": "1"})
    cf.create_profile("alpha", "10000")
    trade = {"qty": "1", "tp_pct": "20", "sl_pct": "10"}
    first = cf.signal("alpha", "TESTUSDT", "BUY", "100.20", **trade)
    clock.advance(60)
    cf.advance(1)  # filled at 100.20
    cf.close_position("alpha", first["position_id"])
    clock.advance(60)
    cf.advance(1)  # sold at 99.00: -1.20
    held = cf.signal("alpha", "TESTUSDT", "BUY", "100.20", **{**trade, "qty": "2"})
    assert held["risk_ok"], held
    clock.advance(60)
    cf.advance(2)  # filled at 100.20, then the market moves on
    return cf


def _nothing_listens(monkeypatch):
    """Point the CLI at a port that is taken and never answers (no server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    monkeypatch.setenv("CAPFLOW_SERVER__ENDPOINT", f"tcp://127.0.0.1:{sock.getsockname()[1]}")
    return sock


def _png_size(path):
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR"
    assert 1000 < len(data) < 500_000
    return struct.unpack(">II", data[16:24])


def test_report_prices_open_positions_at_the_last_stored_fill_without_a_server(
        env, capsys, monkeypatch, make_system):
    _trade_then_hold(env, make_system).stop()
    sock = _nothing_listens(monkeypatch)
    try:
        code, out, _ = _run(["report", "--profile", "alpha", "--out", str(env / "eq.png")],
                            capsys)
    finally:
        sock.close()
    assert code == 0
    assert "equity from the allocation 10,000.00 USDT to 9,998.80 USDT after 1 closed " \
           "trade(s)" in out
    # the last fill stored is the held entry at 100.20: nothing gained or lost yet
    assert "with 1 open position at market (9,998.80 USDT), priced by the last stored " \
           "fill price" in out
    assert _png_size(env / "eq.png") == (1000, 600)


def test_report_prices_open_positions_by_the_running_server(env, capsys, monkeypatch,
                                                          make_system):
    from capflow.protocol.server import Server

    server = Server(_trade_then_hold(env, make_system)).start()
    try:
        monkeypatch.setenv("CAPFLOW_SERVER__ENDPOINT", server.endpoint)
        code, out, _ = _run(["report", "--profile", "alpha", "--out", str(env / "eq.png")],
                            capsys)
    finally:
        server.stop()
    assert code == 0
    # 2 at the market's last 103.10 against 200.40 paid: +5.80
    assert "with 1 open position at market (10,004.60 USDT), priced by the running " \
           "server's market.price" in out
    assert "max_drawdown                        1.20" in out
    assert _png_size(env / "eq.png") == (1000, 600)


def test_report_without_trades_starts_and_ends_at_the_allocation(env, capsys):
    _run(["profile", "create", "alpha", "2500"], capsys)
    code, out, _ = _run(["report", "--out", str(env / "empty.png")], capsys)
    assert code == 0
    assert "equity from the allocation 2,500.00 USDT to 2,500.00 USDT after 0 closed " \
           "trade(s)" in out
    assert "open position" not in out
    assert _png_size(env / "empty.png") == (1000, 600)


def test_report_names_the_profiles_currency_and_says_when_it_sums_two(env, capsys):
    _run(["profile", "create", "alpha", "1000"], capsys)
    _run(["profile", "create", "beta", "0.5", "--currency", "BTC"], capsys)
    code, out, _ = _run(["report", "--profile", "beta", "--out", str(env / "b.png")], capsys)
    assert code == 0
    assert "equity from the allocation 0.50000000 BTC" in out
    assert "differ" not in out
    code, out, _ = _run(["report", "--out", str(env / "all.png")], capsys)
    assert code == 0
    assert "note: the profiles' currencies differ (BTC+USDT)" in out


def test_a_wrong_adapter_class_stops_the_cli_with_its_name(env, capsys, monkeypatch):
    monkeypatch.setenv("CAPFLOW_BROKERS__ACCOUNTS__PAPER__ADAPTER", "brokers.paper:Nope")
    code, _, err = _run(["profile", "create", "alpha", "1"], capsys)
    assert code == 2 and "brokers.paper:Nope" in err and "has no class 'Nope'" in err



def test_a_reader_that_goes_away_gets_no_traceback(env, monkeypatch):
    """`capflow profile list | head -1`: the rest of the output has nowhere to go; the
    command ends quietly with status 141 (as a shell reports SIGPIPE), no BrokenPipeError."""
    assert _run_quiet(["profile", "create", "alpha", "5"]) == 0
    read, write = os.pipe()
    os.close(read)  # the reader is gone
    gone = os.fdopen(write, "w", buffering=1)
    monkeypatch.setattr("sys.stdout", gone)
    try:
        assert run.main(["profile", "list"]) == 141
    finally:
        monkeypatch.undo()
        gone.close()  # its fd now points at /dev/null: closing it raises nothing


def _run_quiet(argv) -> int:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return run.main(argv)


def test_report_through_a_server_named_by_endpoint_reads_nothing_local(
        env, capsys, monkeypatch, make_system):
    """`report --endpoint` from a folder with no storage: before, it printed the server's
    statistics, then opened (and created) the local storage for the currency and died on
    `no such table: profiles`; and it priced by the configured endpoint, not the one
    given."""
    from capflow.protocol.server import Server

    server = Server(_trade_then_hold(env, make_system)).start()
    elsewhere = env / "elsewhere"
    try:
        monkeypatch.setenv("CAPFLOW_STORAGE__URL", f"sqlite:///{elsewhere}/none.db")
        code, out, err = _run(["report", "--profile", "alpha", "--endpoint", server.endpoint,
                               "--out", str(env / "eq.png")], capsys)
    finally:
        server.stop()
    assert code == 0, err
    assert "with 1 open position at market (10,004.60 USDT), priced by the running " \
           "server's market.price" in out
    assert not elsewhere.exists()
    assert _png_size(env / "eq.png") == (1000, 600)


@pytest.mark.parametrize("argv", [["stats"], ["report"], ["profile", "list"],
                                  ["profile", "show", "alpha"]])
def test_reading_commands_with_no_server_and_no_storage_say_so_and_create_nothing(
        env, capsys, argv):
    """Before: a traceback (`no such table: ledger_snapshots`) and a new empty database
    with its lock file left behind."""
    endpoint = os.environ["CAPFLOW_SERVER__ENDPOINT"]
    code, out, err = _run(argv, capsys)
    assert out == ""
    assert code == 1
    assert err == (f"capflow: no capflow storage at sqlite:///{env}/cli.db and no capflow "
                   f"server at {endpoint}: start one (`make run`) or run this where its "
                   "data/ is\n")
    assert sorted(p.name for p in env.iterdir()) == []
    # an empty file (what the old code left behind) is no storage either
    (env / "cli.db").touch()
    code, _, err = _run(argv, capsys)
    assert code == 1 and "no capflow storage at" in err


def test_stats_says_when_it_sums_two_currencies(env, capsys):
    _run(["profile", "create", "alpha", "1000"], capsys)
    _run(["profile", "create", "beta", "900", "--currency", "EUR"], capsys)
    code, out, _ = _run(["stats"], capsys)
    assert code == 0 and "note: the profiles' currencies differ (EUR+USDT)" in out
    code, out, _ = _run(["stats", "--profile", "beta"], capsys)
    assert code == 0 and "differ" not in out


def test_report_out_a_folder_a_bad_place_or_another_format(env, capsys):
    """Before: a directory, /proc/x.png or file/x.png gave a traceback after the
    statistics, and r.pdf / r.svg were PNG bytes under another name."""
    _run(["profile", "create", "alpha", "2500"], capsys)
    (env / "charts").mkdir()
    code, out, _ = _run(["report", "--profile", "alpha", "--out", "charts"], capsys)
    assert code == 0 and f"wrote {Path('charts') / 'equity-alpha.png'}" in out
    assert _png_size(env / "charts" / "equity-alpha.png") == (1000, 600)
    (env / "file").write_text("")
    for bad in ("/proc/x.png", "file/x.png"):
        code, out, err = _run(["report", "--out", bad], capsys)
        assert code == 1 and "Traceback" not in err
        assert err.splitlines()[-1].startswith(f"capflow: cannot write the report to {bad}: ")
    code, _, _ = _run(["report", "--out", "r.pdf"], capsys)
    assert code == 0 and (env / "r.pdf").read_bytes().startswith(b"%PDF")
    code, _, _ = _run(["report", "--out", "r.svg"], capsys)
    assert code == 0 and b"<svg" in (env / "r.svg").read_bytes()[:2000]
    code, out, err = _run(["report", "--out", "r.jpeg"], capsys)
    assert code == 2 and "the report is written as .png, .pdf or .svg" in err and out == ""


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf"])
@pytest.mark.parametrize("command", [
    ["call", "system.health", "--timeout"], ["halt", "--timeout"], ["resume", "--timeout"],
    ["flatten", "--all", "--timeout"], ["top", "--once", "--timeout"],
    ["profile", "list", "--timeout"], ["profile", "show", "alpha", "--timeout"],
    ["stats", "--timeout"], ["report", "--timeout"], ["top", "--once", "--interval"],
    ["stress", "--duration"], ["stress", "--kill-every"],
])
def test_a_duration_is_a_finite_number_of_seconds_above_zero(env, capsys, command, value):
    """Before: -1 waited for ever, nan and inf ended in a traceback, 0 always timed out."""
    argv = [*command, value]
    with pytest.raises(SystemExit) as exited:
        run.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {argv[-2]}: {value!r}: give a number of seconds above 0" in err
