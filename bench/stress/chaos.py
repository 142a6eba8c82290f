"""The server of a stress run, and the chaos done to it.

`ServerProcess` runs ``python -m capflow.run serve`` as a child process with a config
written into the run folder (its own SQLite database, loopback ports, a fast simulator,
the paper broker behind the stallable adapter of `capflow.brokers.faults`).

`Chaos` is one thread that works through a seeded schedule, one fault at a time:

- ``kill``: SIGKILL the server; wait until nobody owns the database (the storage
  process finishes at most the batch it was committing), audit the storage at this
  crash point, and start the server again. The bots meanwhile get no answer and retry.
- ``stall``: the broker adapter blocks for a few seconds (the stall file exists).
- ``storage``: another connection holds the database's write lock for a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

MODES = ("kill", "stall", "storage")
#: how long a stall or a storage outage lasts (seconds)
FAULT_S = 3.0


def parse_modes(text: str | None) -> set[str]:
    if not text:
        return set()
    modes = {m.strip() for m in text.split(",") if m.strip()}
    unknown = modes - set(MODES)
    if unknown:
        raise ValueError(f"--chaos: unknown mode(s) {sorted(unknown)}; choose from "
                         f"{', '.join(MODES)}")
    return modes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: the run's server answers TIMEOUT for a request not finished in this time
REQUEST_TIMEOUT_S = 2.0


def bot_patience(request_timeout_s: float) -> float:
    """How long a bot waits for one attempt: well past the server's own deadline, so a
    server that is up always answers first (its TIMEOUT or UNAVAILABLE, which the bot
    retries with the same id); only a server that is down leaves the bot with no
    answer."""
    return max(2 * request_timeout_s, request_timeout_s + 1.0)


CONFIG = """\
# written by capflow stress for this run
[storage]
url = "{url}"

[server]
endpoint = "{endpoint}"
events_endpoint = "{events}"
request_timeout_s = {request_timeout_s}

[log]
level = "INFO"

[oms]
audit_log = "{run_dir}/signals.jsonl"

[simulator]
tick_interval_s = 0.2
dt_s = 600
seed = {seed}

[risk.limits]
max_open_positions = 40

[brokers.accounts.paper]
adapter = "capflow.brokers.faults:StallablePaperBroker"
initial_cash = "{cash}"
settings = {{ stall_file = "{stall}", stall_max_s = 20 }}
"""


class ServerProcess:
    def __init__(self, run_dir: Path, *, seed: int, profiles: int, allocation: int):
        self.dir = Path(run_dir)
        self.url = f"sqlite:///{self.dir}/capflow.db"
        self.endpoint = f"tcp://127.0.0.1:{_free_port()}"
        self.stall_file = self.dir / "broker.stall"
        self.config = self.dir / "capflow.toml"
        self.config.write_text(CONFIG.format(
            url=self.url, endpoint=self.endpoint, events=f"tcp://127.0.0.1:{_free_port()}",
            run_dir=self.dir, seed=seed, cash=profiles * allocation * 2,
            stall=self.stall_file, request_timeout_s=REQUEST_TIMEOUT_S))
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 60.0) -> float:
        """Start and wait until it answers; the seconds that took."""
        started = time.monotonic()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAPFLOW_")}
        with open(self.dir / "server.out", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "capflow.run", "--config", str(self.config), "serve"],
                cwd=self.dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        self.starts += 1
        from capflow.protocol.client import Client, ClientError

        with Client(self.endpoint, timeout_s=0.5, retries=0) as c:
            while time.monotonic() - started < timeout_s:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.proc.returncode} at "
                                       f"start; see {self.dir / 'server.out'}")
                try:
                    c.health()
                    return time.monotonic() - started
                except ClientError:
                    time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the server did not answer within {timeout_s:g} s")

    def kill(self) -> None:
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self, timeout_s: float = 60.0) -> None:
        if not self.alive():
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()


@contextlib.contextmanager
def quiet_storage(url: str, wait_s: float = 30.0) -> Iterator[None]:
    """Reservation the database's owner lock, so no capflow process writes while inside. Waits
    up to `wait_s` for a storage process left by a killed server to finish."""
    from capflow.actors.model.errors import Unavailable
    from capflow.storage.engine import OwnerLock, open_engine

    engine = open_engine(url)
    lock = OwnerLock(engine)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                lock.acquire()
                break
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        try:
            yield
        finally:
            lock.release()
    finally:
        engine.dispose()


class Chaos(threading.Thread):
    def __init__(self, server: ServerProcess, modes: set[str], *, seed: int, t0: float,
                 duration: float, kill_every: float, run_dir: Path,
                 acks: Callable[[], list], say: Callable[[str], None],
                 witness_profile: str | None = None):
        super().__init__(name="stress-chaos", daemon=True)
        self.server = server
        #: the profile a fault's witness request deposits to (None: no witness)
        self.witness_profile = witness_profile
        self.t0 = t0
        self.acks = acks
        self.say = say
        self.run_dir = run_dir
        self.kills: list[dict] = []
        self.faults: list[dict] = []
        self.crash_audits: list[dict] = []
        self.errors: list[str] = []
        self._halt = threading.Event()
        self.schedule = self.plan(modes, random.Random(seed), duration, kill_every)

    @staticmethod
    def plan(modes: set[str], rng: random.Random, duration: float,
             kill_every: float) -> list[tuple[float, str]]:
        """(run second, mode): one kill per `kill_every` seconds on average, each at a
        random moment of its own slot; one stall and one storage outage at random
        moments. Faults run one at a time, so one due during another waits for it."""
        lo, hi = min(2.0, duration / 4), max(duration - FAULT_S - 2.0, duration / 2)
        events: list[tuple[float, str]] = []
        if "kill" in modes:
            n = max(1, round((hi - lo) / kill_every))
            slot = (hi - lo) / n
            events += [(lo + (i + rng.uniform(0.1, 0.9)) * slot, "kill") for i in range(n)]
        for mode in ("stall", "storage"):
            if mode in modes:
                events.append((rng.uniform(lo, hi), mode))
        return sorted(events)

    def now(self) -> float:
        return time.time() - self.t0

    def run(self) -> None:
        for at, mode in self.schedule:
            while self.now() < at:
                if self._halt.wait(min(0.05, at - self.now())):
                    return
            try:
                getattr(self, f"do_{mode}")()
            except Exception as exc:  # reported in the run (a violation), never silently
                self.errors.append(f"{mode} at {at:.1f} s failed: {exc}")
                self.say(f"chaos: {mode} failed: {exc!r}")
                if not self.server.alive() and not self._halt.is_set():
                    try:
                        self.server.start()
                    except Exception as again:
                        self.errors.append(f"restart after the failed {mode}: {again}")

    def finish(self) -> None:
        """Stop scheduling; wait for the fault under way to end (server up again)."""
        self._halt.set()
        self.join(timeout=120)

    # -- the faults -------------------------------------------------------------------

    def do_kill(self) -> None:
        from capflow.bench.stress.audit import audit_storage

        t = self.now()
        self.server.kill()
        with quiet_storage(self.server.url):
            result = audit_storage(self.server.url, self.acks())
        kill = {"t": round(t, 3), "down_s": None, "restart_s": None, "audit_ok": result.ok}
        self.kills.append(kill)  # with its crash-point audit, so the two lists stay paired
        self.crash_audits.append({"t": round(t, 3), **result.as_dict()})
        up = self.server.start()
        down = self.now() - t
        kill.update(down_s=round(down, 3), restart_s=round(up, 3))
        self.say(f"chaos: SIGKILL at {t:.1f} s, audit at the crash point "
                 f"{'clean' if result.ok else 'FAILED'}, answering again after {down:.1f} s")

    def witness(self, kind: str, t: float) -> dict | None:
        """One request that must meet the fault, sent by the harness itself at its start,
        so that every fault window shows capflow's answer to it whatever the bots
        happened to send: a deposit of 0.01, which claims cash from the broker account's
        manager (stalled by a stall) and commits (blocked by a storage lock). The server
        must answer it TIMEOUT or UNAVAILABLE within the bots' patience."""
        if self.witness_profile is None:
            return None
        from capflow.protocol.client import Client, ClientError, ClientTimeout

        started = time.monotonic()
        with Client(self.server.endpoint, timeout_s=bot_patience(REQUEST_TIMEOUT_S),
                    retries=0) as c:
            try:
                c.call("ledger.deposit", profile_id=self.witness_profile, amount="0.01",
                       client_request_id=f"chaos-{kind}-{t:.3f}")
                code = "ok"
            except ClientTimeout:
                code = "NO_ANSWER"
            except ClientError as exc:
                code = exc.code
        return {"op": "ledger.deposit", "code": code,
                "ms": round((time.monotonic() - started) * 1000.0, 1)}

    def do_stall(self) -> None:
        t = self.now()
        self.server.stall_file.touch()
        try:
            held = self.server.stall_file.with_name(self.server.stall_file.name + ".held")
            until = time.monotonic() + 2.0  # the next tick reaches the adapter and stalls
            while not held.exists() and time.monotonic() < until:
                time.sleep(0.01)
            witness = self.witness("stall", t)
            self._halt.wait(max(0.0, FAULT_S - (self.now() - t)))
        finally:
            self.server.stall_file.unlink(missing_ok=True)
        self.faults.append({"kind": "stall", "start": round(t, 3), "end": round(self.now(), 3),
                            "witness": witness})
        self.say(f"chaos: broker adapter stalled from {t:.1f} s for {self.now() - t:.1f} s")

    def do_storage(self) -> None:
        path = self.server.url.removeprefix("sqlite:///")
        conn = sqlite3.connect(path, timeout=10, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            t = self.now()
            try:
                witness = self.witness("storage", t)
                self._halt.wait(max(0.0, FAULT_S - (self.now() - t)))
            finally:
                conn.execute("ROLLBACK")
        finally:
            conn.close()
        self.faults.append({"kind": "storage", "start": round(t, 3),
                            "end": round(self.now(), 3), "witness": witness})
        self.say(f"chaos: database locked from {t:.1f} s for {self.now() - t:.1f} s")
