"""Findings about `capflow stress` (bench/stress): each test shows a way the harness can
pass, crash or leave a process behind where it should not, and fails today.

The orchestration tests drive `Run.run` with the bots and the server faked (no process
is started), so they take a second or two; the chaos thread is the real one."""

from __future__ import annotations

import io
import json
import threading
import time
from argparse import Namespace
from types import SimpleNamespace

import pytest

import capflow.bench.stress as stress
from capflow.bench.stress import audit as audit_mod
from capflow.bench.stress.audit import audit_storage

from .actors.test_trading import SETTINGS, step, write_ticks

# -- fakes for the orchestration -----------------------------------------------------------


def _args(tmp_path, **over) -> Namespace:
    args = dict(endpoint=None, storage_url=None, clients=1, profiles=1, duration=4.0, ops=0,
                seed=3, mix=None, chaos="", kill_every=100.0, out=str(tmp_path / "run"),
                no_progress=True)
    args.update(over)
    return Namespace(**args)


class _Bot:
    """A bot process that has already run (the bots are not what these tests are about)."""

    exitcode = 0

    def __init__(self, target=None, args=(), daemon=None, name=None):
        pass

    def start(self):
        pass

    def join(self, timeout=None):
        pass

    def is_alive(self):
        return False

    def terminate(self):
        pass


class _Ctx:
    def __init__(self, bot=_Bot):
        self.Process = bot

    def Array(self, typecode, n, lock=False):
        return [0] * n

    def Event(self):
        return threading.Event()


class _Server:
    """Stands in for `ServerProcess`: records when it is started and stopped."""

    def __init__(self, url: str, tmp_path, fail_starts: int = 0):
        self.url = url
        self.endpoint = "tcp://127.0.0.1:9"
        self.stall_file = tmp_path / "broker.stall"
        self.pid = 0
        self.up = False
        self.fail_starts = fail_starts
        self.started: list[float] = []
        self.stopped: list[float] = []

    def alive(self) -> bool:
        return self.up

    def start(self, timeout_s: float = 60.0) -> float:
        self.started.append(time.monotonic())
        if self.fail_starts and len(self.started) > 1:  # a restart after a kill
            self.fail_starts -= 1
            raise RuntimeError("the server did not answer within 60 s")
        self.up = True
        return 0.01

    def kill(self) -> None:
        self.up = False

    def stop(self, timeout_s: float = 60.0) -> None:
        self.stopped.append(time.monotonic())
        self.up = False


def _migrated_db(make_system, sqlite_url) -> str:
    make_system(sqlite_url).stop()
    return sqlite_url


def _fake_run(monkeypatch, tmp_path, server: _Server, *, bot=_Bot, progress=None, **over):
    """A `Run` whose server and bots are fakes; the wire audit and the flattening are
    skipped (nothing answers on the fake endpoint)."""
    def start_server(self):
        self.server = server
        server.start()
        self.endpoint, self.url = server.endpoint, None

    monkeypatch.setattr(stress.Run, "start_server", start_server)
    monkeypatch.setattr(stress.Run, "create_profiles", lambda self: None)
    monkeypatch.setattr(stress.Run, "flatten", lambda self, timeout_s=30.0: 0)
    monkeypatch.setattr(audit_mod, "audit_wire",
                        lambda client, pids: (audit_mod.Audit(), {}))
    monkeypatch.setattr(stress, "multiprocessing",
                        SimpleNamespace(get_context=lambda _method: _Ctx(bot)))
    if progress is not None:
        monkeypatch.setattr(stress.Run, "_progress", progress)
    return stress.Run(_args(tmp_path, **over), out=io.StringIO())


# -- orchestration -------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_ctrl_c_during_a_chaos_run_starts_no_server_after_the_stop(
        make_system, sqlite_url, tmp_path, monkeypatch):
    server = _Server(_migrated_db(make_system, sqlite_url), tmp_path)

    def interrupted(self, t0, deadline, counter, stop, bots):
        time.sleep(0.2)
        raise KeyboardInterrupt

    run = _fake_run(monkeypatch, tmp_path, server, progress=interrupted, chaos="kill")
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run.run()
    assert server.stopped
    time.sleep(max(0.0, 3.0 - (time.monotonic() - t0)))  # the seeded kill is due by 1.9 s
    assert [t for t in server.started if t > server.stopped[-1]] == []


@pytest.mark.timeout(30)
def test_a_chaos_fault_that_failed_is_in_the_report(make_system, sqlite_url, tmp_path,
                                                     monkeypatch):
    server = _Server(_migrated_db(make_system, sqlite_url), tmp_path, fail_starts=1)

    def until_the_kill_is_over(self, t0, deadline, counter, stop, bots):
        end = time.monotonic() + 8
        while len(server.started) < 3 and time.monotonic() < end:
            time.sleep(0.05)

    run = _fake_run(monkeypatch, tmp_path, server, progress=until_the_kill_is_over,
                    chaos="kill")
    rc = run.run()
    assert len(server.started) >= 3  # the kill happened, its restart failed once
    text = (tmp_path / "run" / "report.json").read_text()
    assert "did not answer" in text, (rc, text[:400])


@pytest.mark.timeout(30)
def test_a_crashed_bot_fails_the_run(make_system, sqlite_url, tmp_path, monkeypatch):
    class Crashed(_Bot):
        exitcode = 1

    server = _Server(_migrated_db(make_system, sqlite_url), tmp_path)
    run = _fake_run(monkeypatch, tmp_path, server, bot=Crashed)
    assert run.run() == 1


@pytest.mark.timeout(30)
def test_positions_that_never_close_still_give_a_report(make_system, sqlite_url, tmp_path,
                                                       monkeypatch):
    server = _Server(_migrated_db(make_system, sqlite_url), tmp_path)
    run = _fake_run(monkeypatch, tmp_path, server)

    def stuck(self, timeout_s=30.0):
        raise stress.StressError("positions still open 30 s after asking to close them")

    monkeypatch.setattr(stress.Run, "flatten", stuck)
    try:
        rc = run.run()
    except stress.StressError:
        rc = None
    assert (tmp_path / "run" / "report.json").exists() and rc == 1


@pytest.mark.timeout(30)
def test_a_reused_run_folder_does_not_mix_an_earlier_run_into_the_report(
        make_system, sqlite_url, tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / "bot-7.requests.jsonl").write_text('[1.0,"allocation.reserve",2.0,"ok"]\n' * 5)
    server = _Server(_migrated_db(make_system, sqlite_url), tmp_path)
    try:
        run = _fake_run(monkeypatch, tmp_path, server)
        run.run()
    except stress.StressError:
        return  # refusing a used run folder would do too
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["requests"] == 0  # the fake bots sent nothing


@pytest.mark.timeout(30)
def test_endpoint_with_storage_url_audits_the_storage_and_writes_the_report(
        make_system, sqlite_url, tmp_path, monkeypatch):
    from capflow.protocol.server import Server

    server = Server(make_system(sqlite_url, server={
        "endpoint": "tcp://127.0.0.1:*", "events_endpoint": "tcp://127.0.0.1:*"})).start()
    try:
        run = stress.Run(_args(tmp_path, endpoint=server.endpoint, storage_url=sqlite_url),
                         out=io.StringIO())
        monkeypatch.setattr(run, "load", lambda: (0.1, [], [], []))  # no bots needed
        run.run()
    finally:
        server.stop()
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["audit"]["checked"].get("storage: ledgers") == 1


# -- the audit -----------------------------------------------------------------------------


def test_an_acknowledged_close_the_stop_loss_did_instead_is_a_violation(
        make_system, sqlite_url, tmp_path, clock):
    cf = make_system(sqlite_url, clock=clock,
                     simulator={"replay": write_ticks(tmp_path / "t.csv", [
                         ("100.00", "100.20"), ("97.00", "97.20")]), "symbols": {}},
                     brokers={"accounts": {"paper": {"settings": SETTINGS}}})
    cf.create_profile("p", "10000")
    s = cf.signal("p", "TESTUSDT", "BUY", "100", qty="10", tp_pct="20", sl_pct="2",
                  signal_id="s1")
    step(cf, clock)  # filled at 100.20
    # the server answered ok to position.close, then lost the request (no close recorded)
    acks = [{"op": "close", "pid": "p", "position_id": s["position_id"], "t": 1.0}]
    step(cf, clock)  # 97.00 < the stop 98.00: closed by the stop-loss
    pos = {p.position_id: p for p in cf.trading.list_positions("p")[0]}[s["position_id"]]
    assert (pos.status, pos.close_reason, pos.close_requested) == ("CLOSED", "sl", None)
    cf.stop()
    result = audit_storage(sqlite_url, acks, closes=True)
    assert not result.ok, result.checked


# -- the bots' patience ----------------------------------------------------------------------


class _CapturingBot(_Bot):
    specs: list = []

    def __init__(self, target=None, args=(), daemon=None, name=None):
        _CapturingBot.specs.append(args[0])


@pytest.mark.timeout(60)
def test_a_bot_waits_for_the_servers_own_answer_past_its_deadline(
        make_system, sqlite_url, tmp_path, monkeypatch):
    """A request the server could not finish is answered TIMEOUT by the server itself at
    its deadline; a bot that gave up before that would log NO_ANSWER for a server that
    is up. The bots' patience is derived from the deadline the run's server is given."""
    import tomllib

    from capflow.bench.stress.chaos import ServerProcess, bot_patience

    (tmp_path / "cfg").mkdir()
    written = ServerProcess(tmp_path / "cfg", seed=1, profiles=1, allocation=100)
    deadline = tomllib.loads(written.config.read_text())["server"]["request_timeout_s"]
    server = _Server(_migrated_db(make_system, sqlite_url), tmp_path)
    _CapturingBot.specs = []
    run = _fake_run(monkeypatch, tmp_path, server, bot=_CapturingBot,
                    progress=lambda *a: None)
    assert run.request_timeout_s == deadline
    run.run()
    [spec] = _CapturingBot.specs
    assert spec.timeout_s == bot_patience(deadline) >= deadline + 1.0
    # against another server (--endpoint), the deadline of the config the command read
    other = stress.Run(_args(tmp_path, endpoint="tcp://127.0.0.1:1", out=str(tmp_path / "x")),
                       out=io.StringIO(), request_timeout_s=7.0)
    assert other.request_timeout_s == 7.0
