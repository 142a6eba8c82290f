"""The gateway's watchdog: a socket thread that dies or stalls is reported at once
(`Server.failure`, the `on_failure` callback, CRITICAL in the log), and `capflow serve`
stops with a non-zero exit status instead of keeping its ports open without answering.

The socket thread is killed or wedged on purpose by replacing one of its methods: no
request a client can send does that (tests/protocol/test_curve_peers.py and
test_fuzz.py try)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest

from capflow.protocol.auth import generate
from capflow.protocol.client import Client, CurveKeys
from capflow.protocol.server import Server

from .test_curve import _write_clients
from .test_sigterm import _free_port

ROOT = Path(__file__).resolve().parents[2]


class Killed(BaseException):
    """Not an Exception: what the loop's guard must not swallow (a bug, an interrupt)."""


@pytest.fixture
def gateway(make_system, sqlite_url):
    made: list[Server] = []

    def start(stall_s: float = 30.0, **sections) -> tuple[Server, list[str]]:
        reasons: list[str] = []
        system = make_system(sqlite_url, server={
            "endpoint": "tcp://127.0.0.1:*", "events_endpoint": "tcp://127.0.0.1:*",
            "watchdog_stall_s": stall_s, "drain_timeout_s": 1}, **sections)
        server = Server(system, on_failure=reasons.append).start()
        made.append(server)
        return server, reasons

    yield start
    for server in made:
        server.stop()


def _wait(reasons: list[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not reasons and time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_healthy_gateway_never_fires(gateway):
    server, reasons = gateway(stall_s=0.5)
    with Client(server.endpoint, timeout_s=3, retries=0) as c:
        for _ in range(10):
            assert c.health()["status"] == "ok"
            time.sleep(0.1)  # idle turns count too: the loop wakes at least 5 times a second
    assert reasons == [] and server.failure is None


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_socket_thread_is_reported_at_once(gateway):
    server, reasons = gateway()  # the 30 s stall limit plays no part here

    def boom() -> None:
        raise Killed("on purpose")

    with Client(server.endpoint, timeout_s=3, retries=0) as c:
        assert c.health()["status"] == "ok"
    server._expire = boom  # called every turn of the loop
    _wait(reasons, 5)
    assert len(reasons) == 1, reasons
    assert reasons[0].startswith("the capflow-server thread died"), reasons
    assert "Killed" in reasons[0] and server.failure == reasons[0]
    server._thread.join(5)
    assert not server._thread.is_alive()


def test_a_stalled_socket_thread_is_reported_and_health_says_failed(gateway):
    server, reasons = gateway(stall_s=0.5)
    release = threading.Event()
    expire = server._expire

    def wedged() -> None:
        release.wait(30)
        server._expire = expire

    server._expire = wedged
    try:
        _wait(reasons, 5)
        assert len(reasons) == 1, reasons
        assert "stalled" in reasons[0] and "limit 0.5 s" in reasons[0], reasons
        assert server.failure == reasons[0]
    finally:
        release.set()
    # the loop turns again: whoever can still ask sees that it has failed
    with Client(server.endpoint, timeout_s=3, retries=0) as c:
        assert c.health()["status"] == "failed"
    time.sleep(0.3)
    assert len(reasons) == 1  # reported once


def test_a_failure_in_one_turn_is_logged_and_the_loop_goes_on(gateway):
    server, reasons = gateway(stall_s=2)
    expire, failures = server._expire, []

    def flaky() -> None:
        if len(failures) < 3:
            failures.append(1)
            raise RuntimeError("one bad turn")
        expire()

    server._expire = flaky
    with Client(server.endpoint, timeout_s=3, retries=0) as c:
        deadline = time.monotonic() + 5
        while len(failures) < 3 and time.monotonic() < deadline:
            assert c.health()["status"] == "ok"
            time.sleep(0.05)
        assert len(failures) == 3
        for _ in range(3):
            assert c.health()["status"] == "ok"
    assert reasons == [] and server.failure is None and server._thread.is_alive()


def test_a_dead_curve_authenticator_is_reported(gateway, tmp_path):
    """Under CURVE no connection gets in without the ZAP handler's thread: its death is
    the gateway's failure too."""
    keys_dir = tmp_path / "keys"
    generate(keys_dir, ["bot"])
    _write_clients(keys_dir, {"bot": ["*"]})
    server, reasons = gateway(security={"curve": True, "keys_dir": str(keys_dir)})
    curve = CurveKeys.load(str(keys_dir / "server.key"), str(keys_dir / "bot.key_secret"))
    with Client(server.endpoint, timeout_s=3, retries=0, curve=curve) as c:
        assert c.health()["status"] == "ok"
    assert reasons == []
    server.authorizer.stop()  # as if it had died: its thread ends
    _wait(reasons, 5)
    assert reasons == ["the CURVE authenticator thread died"]


def test_capflow_serve_exits_non_zero_when_its_socket_thread_dies(tmp_path):
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    env = {**os.environ, "CAPFLOW_STORAGE__URL": f"sqlite:///{tmp_path}/srv.db",
           "CAPFLOW_SERVER__ENDPOINT": endpoint,
           "CAPFLOW_SERVER__EVENTS_ENDPOINT": f"tcp://127.0.0.1:{_free_port()}",
           "CAPFLOW_LOG__LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "tests/protocol/failing_serve.py"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        with Client(endpoint, timeout_s=0.5, retries=40) as c:
            assert c.health()["status"] == "ok"  # retries until the server is up
            c.timeout_s, c.retries = 0.5, 0
            c._sock.send(msgpack.packb({"v": 1, "id": "k-1", "op": "test.kill-socket-thread"}))
        code = proc.wait(30)
        stderr = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 1, stderr
    critical = [line for line in stderr.splitlines() if "CRITICAL" in line]
    assert any("the gateway has failed: the capflow-server thread died" in line
               for line in critical), stderr
    assert any("capflow stops because its gateway failed" in line for line in critical)
