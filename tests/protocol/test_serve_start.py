"""`capflow serve` when its storage is taken, and Ctrl-C while it starts: real server
processes in one folder, signals to the process group as a terminal sends them."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from capflow.protocol.client import Client

from ..test_run import free_endpoint

CAPFLOW = str(Path(sys.executable).with_name("capflow"))


def _env(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPFLOW_")}
    env.update(CAPFLOW_SERVER__ENDPOINT=endpoint, CAPFLOW_SERVER__EVENTS_ENDPOINT=free_endpoint(),
               CAPFLOW_LOG__LEVEL="WARNING")
    return env


def _start(cwd: Path, endpoint: str) -> subprocess.Popen:
    return subprocess.Popen([CAPFLOW, "serve"], cwd=cwd, env=_env(endpoint), text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def _answers(endpoint: str) -> None:
    with Client(endpoint, timeout_s=0.5, retries=120) as c:
        assert c.health()["status"] == "ok"  # retries until the server is up


def _line(proc: subprocess.Popen, seconds: float) -> str:
    if select.select([proc.stderr], [], [], seconds)[0]:
        return proc.stderr.readline()
    return ""


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_a_second_server_where_one_answers_fails_at_once_naming_it(tmp_path):
    endpoint = free_endpoint()
    first = _start(tmp_path, endpoint)
    try:
        _answers(endpoint)
        second = subprocess.run([CAPFLOW, "serve"], cwd=tmp_path, env=_env(endpoint),
                                capture_output=True, text=True, timeout=120)
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert second.returncode == 1, second.stderr
    assert "Traceback" not in second.stderr
    assert second.stderr.startswith(f"capflow: UNAVAILABLE: a capflow server already answers "
                                    f"at {endpoint}, and the storage "
                                    "sqlite:///data/capflow.db is owned by another capflow "
                                    f"process (pid {first.pid} on "), second.stderr
    assert second.stderr.count("\n") == 1


def test_a_second_server_says_whom_it_waits_for_and_starts_when_it_lets_go(tmp_path):
    """On another endpoint, the storage's owner may be a server that is stopping: the
    second says so at once (owner's pid), Ctrl-C ends that wait, and once the owner
    stops the next one starts."""
    endpoint = free_endpoint()
    first = _start(tmp_path, endpoint)
    waiting = None
    try:
        _answers(endpoint)
        waiting = _start(tmp_path, free_endpoint())
        said = _line(waiting, 30)
        assert said.startswith("capflow: the storage sqlite:///data/capflow.db is owned by "
                               f"another capflow process (pid {first.pid} on "), said
        assert "waiting up to 15 s for it to let go" in said
        os.killpg(waiting.pid, signal.SIGINT)
        _, err = waiting.communicate(timeout=30)
        assert waiting.returncode == 130, err
        assert err == "capflow: interrupted before it started: nothing was started\n"

        other = free_endpoint()
        waiting = _start(tmp_path, other)
        assert "waiting up to 15 s" in _line(waiting, 30)
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
        _answers(other)  # it took the storage over
        os.killpg(waiting.pid, signal.SIGINT)
        _, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, err
    finally:
        _end(first)
        if waiting is not None:
            _end(waiting)


def _storage_process(pid: int) -> int | None:
    """The storage process of the server `pid` once it runs its own program (before,
    it is the server's fork for a moment)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for child in (task / "children").read_text().split():
                if b"writer_process" in Path(f"/proc/{child}/cmdline").read_bytes():
                    return int(child)
        except OSError:
            pass
    return None


def test_ctrl_c_while_the_storage_process_starts_is_no_traceback(tmp_path):
    """Before: the terminal's SIGINT reached the storage process during its imports: its
    KeyboardInterrupt traceback, then "the storage process did not start"."""
    proc = _start(tmp_path, free_endpoint())
    try:
        deadline = time.monotonic() + 60
        while not _storage_process(proc.pid):  # it has just been started
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C at a terminal does
        _, err = proc.communicate(timeout=60)
    finally:
        _end(proc)
    assert "Traceback" not in err and "did not start" not in err, err
    assert proc.returncode in (0, 130), err
