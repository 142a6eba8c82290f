"""The command line against a running server: `call` (its help, a misspelt op, the
risk.check table), `events`, and the one rule of `profile`, `stats` and `report`
(through the server that answers, else the storage, never a wait for its lock)."""

from __future__ import annotations

import io
import json
import os
import select
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import zmq

from capflow import cli, run
from capflow.protocol.client import Client

from ..test_run import _trade_one_round_trip, free_endpoint
from .replies import error, ok


def test_call_prints_the_result_of_a_running_server(live, capsys):
    server = live()
    out = io.StringIO()
    args = run._parser().parse_args(["call", "profile.create", "profile_id=alpha",
                                     "allocated=250", "--endpoint", server.endpoint])
    assert run.call_command(server.system.config, args, out) == 0
    assert json.loads(out.getvalue())["ledger"]["available"] == "250.00"
    out = io.StringIO()
    args = run._parser().parse_args(["call", "ledger.get", "profile_id=ghost", "--endpoint",
                                     server.endpoint])
    assert run.call_command(server.system.config, args, out) == 2
    assert json.loads(out.getvalue())["error"]["code"] == "NOT_FOUND"


def test_not_found_is_exit_status_2_in_every_command(live, sqlite_url, cli_env, capsys):
    """Before: 1 from halt, resume, flatten and call, 2 from profile and stats."""
    server = live()
    cli_env(server.endpoint, sqlite_url)
    for argv in (["halt", "--profile", "ghost"], ["resume", "--profile", "ghost"],
                 ["halt", "--account", "ghost"], ["flatten", "--profile", "ghost"],
                 ["flatten", "--account", "ghost"], ["profile", "show", "ghost"],
                 ["stats", "--profile", "ghost"], ["report", "--profile", "ghost"],
                 ["call", "ledger.get", "profile_id=ghost"]):
        code, _, err = _run(argv, capsys)
        assert code == 2 and "NOT_FOUND" in err + _, (argv, code, err)


def test_call_refuses_an_argument_given_twice(live, capsys):
    server = live()
    assert run.main(["call", "profile.create", "profile_id=alpha", "allocated=250",
                     "--endpoint", server.endpoint]) == 0
    capsys.readouterr()
    code = run.main(["call", "ledger.withdraw", "profile_id=alpha", "amount=1",
                     "client_request_id=w-1", "amount=200", "--endpoint", server.endpoint])
    assert code == 2
    assert "'amount' is given twice" in capsys.readouterr().err
    args = run._parser().parse_args(["call", "ledger.get", "profile_id=alpha",
                                     "--endpoint", server.endpoint])
    out = io.StringIO()
    assert run.call_command(server.system.config, args, out) == 0
    assert json.loads(out.getvalue())["available"] == "250.00"  # nothing was withdrawn


# -- one rule: through the server that answers, else the storage, never a lock wait --------

@pytest.fixture
def cli_env(monkeypatch, tmp_path):
    """Point the command line at `endpoint` and the storage `url` (and an events endpoint
    where nothing answers unless given); returns the environment, for subprocesses."""

    def point(endpoint: str, url: str, events: str | None = None) -> dict[str, str]:
        for name in list(os.environ):
            if name.startswith("CAPFLOW_"):
                monkeypatch.delenv(name)
        chosen = {"CAPFLOW_SERVER__ENDPOINT": endpoint, "CAPFLOW_STORAGE__URL": url,
                  "CAPFLOW_SERVER__EVENTS_ENDPOINT": events or free_endpoint()}
        for name, value in chosen.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        return dict(os.environ)

    return point


def _run(argv, capsys):
    code = run.main(argv)
    got = capsys.readouterr()
    return code, got.out, got.err


def test_profile_commands_go_through_the_server_that_answers(live, sqlite_url, cli_env,
                                                            capsys, monkeypatch):
    """The server owns the storage: before, each of these waited ~15 s for its lock and
    failed UNAVAILABLE."""
    server = live()
    cli_env(server.endpoint, sqlite_url)
    monkeypatch.setattr(cli, "PAGE", 2)  # so that the list takes several pages
    code, out, err = _run(["profile", "create", "alpha", "250"], capsys)
    assert code == 0 and out.startswith("created profile alpha\n") and "250.00" in out
    assert f"through the server at {server.endpoint}" in err
    code, out, _ = _run(["profile", "create", "alpha", "250.00"], capsys)
    assert code == 0 and out.startswith("profile alpha already exists with these settings")
    code, out, err = _run(["profile", "create", "alpha", "99"], capsys)
    assert code == 2 and "CONFLICT" in err and out == ""
    for pid in ("beta", "gamma"):
        assert _run(["profile", "create", pid, "10"], capsys)[0] == 0
    code, out, _ = _run(["profile", "list"], capsys)
    assert code == 0 and "3 profile(s)" in out
    assert [line.split()[0] for line in out.splitlines()[1:4]] == ["alpha", "beta", "gamma"]
    code, out, _ = _run(["profile", "show", "alpha"], capsys)
    assert code == 0 and "ACTIVE" in out and "250.00" in out
    code, out, _ = _run(["stats"], capsys)
    assert code == 0 and "statistics of all profiles" in out and "total_positions" in out
    code, _, err = _run(["stats", "--profile", "ghost"], capsys)
    assert code == 2 and "NOT_FOUND" in err


def test_stats_and_report_go_through_the_server_that_answers(live, cli_env, capsys,
                                                              tmp_path):
    cli_env(free_endpoint(), f"sqlite:///{tmp_path}/cli.db")
    _trade_one_round_trip(tmp_path)
    server = live(f"sqlite:///{tmp_path}/cli.db")
    cli_env(server.endpoint, f"sqlite:///{tmp_path}/cli.db")
    code, out, err = _run(["stats", "--profile", "alpha", "--group-by", "strategy"], capsys)
    assert code == 0 and f"through the server at {server.endpoint}" in err
    # 10 * (106.00 - 100.20) = 58.00, no fees: the same figures as from the storage
    assert "total_pnl" in out and "58.00" in out and "strategy = t" in out
    code, out, err = _run(["report", "--profile", "alpha", "--out", str(tmp_path / "eq.png")],
                          capsys)
    assert code == 0 and "58.00" in out and "wrote" in out and "through the server" in err
    assert (tmp_path / "eq.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    code, out, _ = _run(["report", "--out", str(tmp_path / "all.png")], capsys)
    assert code == 0 and "statistics of all profiles" in out and "58.00" in out
    assert (tmp_path / "all.png").exists()


@pytest.mark.parametrize("argv, way", [
    (["profile", "list"], "capflow profile list --endpoint ENDPOINT (or capflow call "
                          "profile.list --endpoint ENDPOINT)"),
    (["profile", "show", "alpha"], "capflow profile show ID --endpoint ENDPOINT (or capflow "
                                   "call profile.get profile_id=ID --endpoint ENDPOINT)"),
    (["profile", "create", "beta", "5"], "capflow profile create ID AMOUNT --endpoint "
                                         "ENDPOINT (or capflow call profile.create"),
    (["stats"], "capflow stats --endpoint ENDPOINT (or capflow call stats.get --endpoint "
                "ENDPOINT)"),
    (["report", "--out", "eq.png"], "capflow report --endpoint ENDPOINT"),
])
def test_storage_owned_by_a_server_elsewhere_fails_at_once_and_names_the_way(
        live, sqlite_url, cli_env, capsys, argv, way):
    """No server answers at the configured endpoint, but one on another endpoint owns the
    storage: before, `profile` waited ~15 s for the lock and said only UNAVAILABLE, and
    `stats` / `report` read the storage behind the server's back."""
    server = live()
    nobody = free_endpoint()
    cli_env(nobody, sqlite_url)
    code, out, err = _run(argv, capsys)
    assert code == 1 and out == ""
    assert (f"the storage {sqlite_url} is owned by another capflow process (pid "
            f"{os.getpid()} on ") in err
    assert f"no capflow server answers at {nobody}: if that process is a server" in err
    assert way in err
    # the way it names works
    code, _, err = _run([*argv, "--endpoint", server.endpoint], capsys)
    assert code == (2 if argv[:2] == ["profile", "show"] else 0), err  # alpha: NOT_FOUND


def test_a_server_named_by_endpoint_must_answer(cli_env, tmp_path, capsys):
    """--endpoint asks for a server: no falling back to the storage."""
    nobody = free_endpoint()
    cli_env(free_endpoint(), f"sqlite:///{tmp_path}/cli.db")
    code, out, err = _run(["profile", "list", "--endpoint", nobody], capsys)
    assert code == 1 and out == ""
    assert err == f"capflow: no capflow server answers at {nobody} (is it running? see " \
                  "--endpoint)\n"


def test_a_server_that_takes_the_connection_but_does_not_answer_is_waited_for(capsys):
    """A slow server is not a dead one: when the handshake succeeds the probe does not
    judge, and the request keeps its own timeout and retries; the TIMEOUT then names
    the endpoint it waited for."""
    ctx = zmq.Context()
    silent = ctx.socket(zmq.ROUTER)  # takes connections and requests, answers nothing
    silent.setsockopt(zmq.LINGER, 0)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{port}"
    received: list[bytes] = []
    stop = threading.Event()

    def swallow() -> None:  # the socket's only thread
        while not stop.is_set():
            if silent.poll(20):
                received.append(silent.recv_multipart()[-1])
        silent.close(0)

    reader = threading.Thread(target=swallow)
    reader.start()
    waiting = (f"capflow: the server at {endpoint} took the connection but did not answer "
               "system.health in 1 s (busy or stalled): waiting for its answer, at most 4 "
               "attempts of 0.2 s\n")
    try:
        code, out, err = _run(["call", "system.health", "--endpoint", endpoint,
                               "--timeout", "0.2"], capsys)
        called = list(received)  # each attempt waited 0.2 s after it was sent
        # before: silence while it waited, then "through the server at ..." for a list
        # that never came
        listed = _run(["profile", "list", "--endpoint", endpoint, "--timeout", "0.2"],
                      capsys)
    finally:
        stop.set()
        reader.join()
        ctx.term()
    assert listed[0] == 1 and listed[1] == "", listed
    assert listed[2] == waiting + (f"capflow: TIMEOUT: profile.list: no answer from "
                                   f"{endpoint} after 4 attempts of 0.2 s; the outcome is "
                                   "unknown\n")
    assert code == 1 and err == waiting
    assert json.loads(out)["error"] == {
        "code": "TIMEOUT", "details": {"op": "system.health"},
        "message": f"system.health: no answer from {endpoint} after 4 attempts of 0.2 s; "
                   "the outcome is unknown"}
    # the probe, then the request's attempts, each the same bytes with the same id (the
    # last one may be cut off with its socket)
    assert len(set(called)) == 2 and len(called) >= 1 + 3, called


# -- call: help, typos, risk.check ---------------------------------------------------------

def test_call_help_lists_every_op_with_an_example_the_server_takes(capsys):
    from capflow.protocol.opkit import parse_args
    from capflow.protocol.ops import OPS

    with pytest.raises(SystemExit) as done:
        run.main(["call", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    examples = {line.split()[2]: line.strip() for line in text.splitlines()
                if line.strip().startswith("capflow call ")}
    assert set(examples) == set(OPS)
    for op, line in examples.items():
        words = shlex.split(line, comments=True)[3:]
        args = {k: cli._value(v) for k, _, v in (w.partition("=") for w in words)}
        parse_args(OPS[op][0], args)  # the server's own schema takes it
    assert "capflow call ledger.get profile_id=alpha" in text
    assert "profile.create      profile_id allocated [risk_profile account_id currency]" in text


def test_a_misspelt_op_gets_a_suggestion(live, raw, capsys):
    server = live()
    code, out, err = _run(["call", "ledger.gett", "profile_id=alpha", "--endpoint",
                           server.endpoint], capsys)
    assert code == 1
    details = json.loads(out)["error"]["details"]
    assert details == {"op": "ledger.gett", "did_you_mean": ["ledger.get"]}
    assert ("capflow: no such op 'ledger.gett'; did you mean ledger.get? (`capflow call "
            "--help` lists every op)") in err
    r = raw(server.endpoint)
    assert error(r.request("stats"), "UNKNOWN_OP")["did_you_mean"] == ["stats.get"]
    assert error(r.request("zzz.qqq"), "UNKNOWN_OP")["did_you_mean"] == []


def test_risk_check_is_a_table_with_codes_only_on_failed_checks(market, capsys):
    server, r = market()
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    argv = ["call", "risk.check", "profile_id=p", "symbol=TESTUSDT", "side=BUY",
            "price='100.20'", "qty=1", "--endpoint", server.endpoint]
    code, out, _ = _run(argv, capsys)
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.strip()}
    assert rows["check"] == ["check", "result", "limit", "value", "headroom", "fails", "with"]
    assert rows["trading_state"] == ["trading_state", "ok", "ACTIVE", "ACTIVE", "-"]
    assert "TRADING_HALTED" not in out  # a check that passed shows no failure code
    assert "allowed: every check passes" in out
    ok(r.request("profile.set_state", {"profile_id": "p", "state": "HALTED"}))
    code, out, _ = _run(argv, capsys)
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.strip()}
    assert rows["trading_state"] == ["trading_state", "FAILED", "ACTIVE", "HALTED", "-",
                                     "TRADING_HALTED"]
    assert "NOT allowed: 1 check(s) failed; a signal would be refused with TRADING_HALTED" \
        in out
    # the answer itself is unchanged: --json prints it
    code, out, _ = _run([*argv, "--json"], capsys)
    checks = {c["check"]: c for c in json.loads(out)["checks"]}
    assert checks["capital"]["ok"] is True and checks["capital"]["code"] == (
        "INSUFFICIENT_CAPITAL")


# -- events --------------------------------------------------------------------------------

def _line(stream, seconds: float) -> str:
    """The next line of a subprocess's pipe, or "" after `seconds`."""
    if not select.select([stream], [], [], seconds)[0]:
        return ""
    return stream.readline()


def test_events_says_what_it_is_connected_to_and_waits_for(live, cli_env):
    server = live()
    env = cli_env(server.endpoint, "sqlite:///unused.db", server.events_endpoint)
    capflow = str(Path(sys.executable).with_name("capflow"))
    proc = subprocess.Popen([capflow, "events", "--count", "1", "ledger."], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        said = _line(proc.stderr, 10)
        assert said == (f"capflow: connected to {server.events_endpoint}; the server at "
                        f"{server.endpoint} answers. Waiting for the events of topics "
                        "starting with ledger., until 1 of them; only events published "
                        "from now on arrive\n"), said
        with Client(server.endpoint) as c:
            c.profile_create("alpha", "100")
            c.ledger_deposit("alpha", "5", client_request_id="d-1")
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()  # the process this test started, by its pid
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.split()[0] == "ledger.alpha" and '"CapitalDeposited"' in out


@pytest.mark.parametrize("where", ["events endpoint", "request endpoint"])
def test_events_says_when_nothing_publishes_where_it_looks(live, cli_env, where):
    """Before, `capflow events` printed nothing and waited for ever."""
    server = live()
    nobody = free_endpoint()
    env = cli_env(server.endpoint, "sqlite:///unused.db", nobody)
    argv = ["events"] if where == "events endpoint" else [
        "events", "--endpoint", server.endpoint]  # the request endpoint, by mistake
    capflow = str(Path(sys.executable).with_name("capflow"))
    try:
        proc = subprocess.run([capflow, *argv], env=env, capture_output=True, text=True,
                              timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("capflow events still waits after 20 s")
    assert proc.returncode == 1 and proc.stdout == ""
    if where == "events endpoint":
        assert proc.stderr == (f"capflow: the capflow server at {server.endpoint} answers, "
                               f"but nothing accepts connections at {nobody}: is that its "
                               "[server] events_endpoint? (see --endpoint)\n")
    else:
        assert proc.stderr == (f"capflow: something at {server.endpoint} accepts "
                               "connections but is not a capflow events endpoint (is it a "
                               "request endpoint? see --endpoint)\n")


def test_call_sends_text_where_the_op_takes_text_and_what_msgpack_cannot_carry(live,
                                                                               capsys):
    """Before: `profile_id=123` was sent as an int (INVALID_ARGUMENT 'Expected str, got
    int'), and a 29-digit amount or a TOML date raised `TypeError: can not serialize`
    with a traceback."""
    server = live()

    def call(*words):
        code = run.main(["call", *words, "--endpoint", server.endpoint])
        got = capsys.readouterr()
        return code, json.loads(got.out)

    code, created = call("profile.create", "profile_id=123", "allocated=250")
    assert code == 0 and created["profile_id"] == "123"
    code, answer = call("ledger.deposit", "profile_id=123", "client_request_id=42",
                        "amount=99999999999999999999999999999")
    assert code in (0, 1, 2) and answer.get("error", {}).get("code") != "INTERNAL", answer
    code, answer = call("profile.create", "profile_id=true", "allocated=5",
                        "currency=USDT")
    assert code == 0 and answer["profile_id"] == "true"
    code, answer = call("signal.submit", "profile_id=123", "symbol=BTCUSDT", "side=BUY",
                        "price=65000", "qty=0.001", "timestamp=1979-05-27")
    assert code == 0 and answer["received"] is True, answer
