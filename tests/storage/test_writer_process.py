"""The storage process: it owns the database, survives nothing silently, and a dead one
is replaced."""

from __future__ import annotations

import os
import re
import signal
import time
from decimal import Decimal

import pytest

from capflow.actors.model.errors import Unavailable


def test_the_default_writer_runs_in_a_storage_process_that_owns_the_database(make_system,
                                                                               sqlite_url):
    system = make_system(sqlite_url)
    executor = system.writer.executor
    assert type(executor).__name__ == "ProcessExecutor"
    child = executor.proc.pid
    assert child != os.getpid()
    system.create_profile("p", "100")
    system.reserve("p", "X", "10", "k")
    assert system.ledger("p").held == Decimal("10.00")
    # a second owner of the same database is refused while the first runs
    with pytest.raises(Unavailable):
        make_system(sqlite_url, storage={"writer": "thread"})
    system.stop()
    assert not _alive(child)  # stopping the server stops its storage process


def test_a_killed_storage_process_fails_its_batch_and_is_replaced(make_system, sqlite_url):
    system = make_system(sqlite_url)
    system.create_profile("p", "100")
    system.reserve("p", "X", "10", "before")
    executor = system.writer.executor
    os.kill(executor.proc.pid, signal.SIGKILL)
    time.sleep(0.2)
    with pytest.raises(Unavailable):  # the outcome of this one is unknown to the server
        system.reserve("p", "X", "20", "during")
    # the profile reloaded what storage has; the next batch starts a new process
    deadline = time.monotonic() + 10
    while True:
        try:
            system.reserve("p", "X", "30", "after")
            break
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert executor.restarts >= 1 and executor.proc is not None
    assert system.ledger("p").held == Decimal("40.00")
    assert system.audit("p").ok


def test_an_orphaned_storage_process_keeps_the_database_until_it_exits(tmp_path):
    """A server SIGKILLed leaves its storage process behind for a moment; it exits when
    its stdin closes, and a new owner gets the database only then."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path}/o.db"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import time;"
        "from capflow.storage.writer_process import ProcessExecutor;"
        f"e = ProcessExecutor({url!r}); e.start(); print(e.proc.pid, flush=True);"
        "time.sleep(60)")], stdout=subprocess.PIPE, text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.kill()  # SIGKILL, by its pid
    parent.wait(5)
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


#: a server process whose storage process fails a batch of two (a profile without its
#: NOT NULL columns, twice), and so warns that it retries them one by one
_FAILING_BATCH = """\
import sys

import capflow
from capflow.actors.logs import LogConfig
from capflow.actors.logs import setup_logging
from capflow.storage.engine import open_engine
from capflow.storage.migrate import upgrade
from capflow.storage.writer_process import ProcessExecutor

url, mode = sys.argv[1:]
if mode == "serve":  # as `capflow serve` does
    setup_logging(LogConfig(level="INFO"))
elif mode == "enabled":  # an embedding program that wants capflow's messages
    capflow.enable_logging()
engine = open_engine(url)
upgrade(engine)
engine.dispose()
executor = ProcessExecutor(url)
executor.start()
bad = (None, [("insert", "profiles", {"profile_id": "p"})], None)
statuses = executor.run([bad, bad])
executor.stop()
assert all("NOT NULL" in status for status in statuses), statuses
"""


@pytest.mark.parametrize("mode", ["plain", "enabled", "serve"])
def test_the_storage_process_logs_as_its_server_does(tmp_path, mode):
    """The storage process's warnings reach the stderr it shares with its server in the
    server's format, and nothing does when the server's own capflow messages are off
    (an embedding program that did not turn them on)."""
    import subprocess
    import sys

    script = tmp_path / "server.py"
    script.write_text(_FAILING_BATCH)
    proc = subprocess.run([sys.executable, str(script), f"sqlite:///{tmp_path}/w.db", mode],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines()
              if "storage: batch of 2 failed" in line]
    if mode == "plain":
        assert proc.stderr == ""
    elif mode == "enabled":  # loguru's own default sink, as in the server process
        assert len(warned) == 1 and "| WARNING  |" in warned[0], proc.stderr
    else:
        assert len(warned) == 1, proc.stderr
        assert re.match(r"\d{4}-\d\d-\d\d [\d:.]+ WARNING capflow\.storage\.sql_executor "
                        r"storage: batch of 2 failed", warned[0]), proc.stderr
