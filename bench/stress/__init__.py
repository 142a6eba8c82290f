"""`capflow stress`: simulated bots against a capflow server, with chaos, an audit and a
report.

    capflow stress --clients 4 --profiles 4 --duration 30 --seed 7 --chaos

1. Starts a server of its own (its own SQLite database and config in the run folder,
   the paper broker behind `brokers.faults:StallablePaperBroker`) or uses
   ``--endpoint``.
2. Creates the profiles, then starts the bot processes (`bench.stress.bot`): each sends a
   seeded mix of quotes, reservations and releases, signals, manual closes and queries,
   retrying unknown outcomes with the same idempotency keys.
3. With ``--chaos`` (`bench.stress.chaos`), at seeded moments: SIGKILL and restart the
   server (the storage is audited at each crash point, before the restart), stall the
   broker adapter, lock the database.
4. When the load ends: every acknowledged close must be done, the ledgers are audited
   through the wire, every position is closed, the ledgers are read once more, the
   server is stopped, and the storage is audited (`bench.stress.audit`) and compared
   with the last wire reading.
5. Writes the report (`bench.stress.report`) to the run folder, prints its path, and
   exits 1 if the audit found anything.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from capflow.bench.stress import audit as audit_mod
from capflow.bench.stress.bot import BotSpec, parse_mix
from capflow.bench.stress.chaos import (
    MODES,
    REQUEST_TIMEOUT_S,
    Chaos,
    ServerProcess,
    bot_patience,
    parse_modes,
    quiet_storage,
)

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
ALLOCATION = 100_000


class StressError(Exception):
    """Bad settings for a stress run (reported as a usage error)."""


class Run:
    def __init__(self, args, out=sys.stdout, request_timeout_s: float | None = None):
        self.args = args
        self.out = out
        #: the server's deadline for a request: the run's own server's, or (with
        #: --endpoint) the one of the config the command was given
        self.request_timeout_s = (REQUEST_TIMEOUT_S if request_timeout_s is None
                                  or not args.endpoint else request_timeout_s)
        if args.clients < 1 or args.profiles < 1:
            raise StressError("--clients and --profiles must be at least 1")
        if args.duration <= 0 and args.ops <= 0:
            raise StressError("give a positive --duration or --ops")
        try:
            self.mix = parse_mix(args.mix)
            self.modes = parse_modes(args.chaos)
        except ValueError as exc:
            raise StressError(str(exc)) from None
        if args.endpoint and self.modes:
            raise StressError("--chaos needs a server of the run's own (no --endpoint): it "
                              "kills and restarts it")
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        self.dir = Path(args.out or f"reports/stress/{stamp}-seed{args.seed}").resolve()
        if self.dir.exists() and any(self.dir.iterdir()):
            raise StressError(f"run folder {self.dir} is not empty: its files would mix "
                              "with this run's (choose another --out)")
        self.profiles = [f"stress-{i + 1}" for i in range(args.profiles)]
        self.server: ServerProcess | None = None
        self.url: str | None = args.storage_url
        self.endpoint: str = args.endpoint or ""
        self.extra: dict[str, Any] = {}
        self.chaos: Chaos | None = None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # -- phases -----------------------------------------------------------------------

    def start_server(self) -> None:
        if self.args.endpoint:
            return
        self.server = ServerProcess(self.dir, seed=self.args.seed, profiles=len(self.profiles),
                                    allocation=ALLOCATION)
        self.server.start()
        self.endpoint, self.url = self.server.endpoint, self.server.url
        self.say(f"server: pid {self.server.pid}, {self.endpoint}, {self.url}")

    def client(self, timeout_s: float = 5.0):
        from capflow.protocol.client import Client

        return Client(self.endpoint, timeout_s=timeout_s, retries=2)

    def create_profiles(self) -> None:
        from capflow.protocol.client import ClientError

        with self.client() as c:
            for pid in self.profiles:
                try:
                    c.profile_create(pid, str(ALLOCATION))
                except ClientError as exc:
                    if exc.code != "CONFLICT":  # exists with other content: use it
                        raise

    def load(self) -> tuple[float, list[dict], list[dict], list[dict]]:
        """Run the bots (and the chaos) until the duration or the op count is reached."""
        args = self.args
        ctx = multiprocessing.get_context("spawn")
        counter = ctx.Array("q", args.clients, lock=False)
        stop = ctx.Event()
        t0 = time.time()
        deadline = t0 + (args.duration if args.duration > 0 else 24 * 3600)
        specs = [BotSpec(index=i, endpoint=self.endpoint, profiles=self.profiles,
                         symbols=list(SYMBOLS), mix=self.mix, seed=args.seed,
                         run_dir=str(self.dir), t0=t0, deadline=deadline,
                         timeout_s=bot_patience(self.request_timeout_s), give_up_s=60.0)
                 for i in range(args.clients)]
        from capflow.bench.stress.bot import main as bot_main

        bots = [ctx.Process(target=bot_main, args=(spec, counter, stop), daemon=True,
                            name=f"stress-bot-{spec.index}") for spec in specs]
        for b in bots:
            b.start()
        chaos = None
        try:
            if self.modes:
                chaos = self.chaos = Chaos(
                    self.server, self.modes, seed=args.seed, t0=t0,
                    duration=args.duration if args.duration > 0 else 60.0,
                    kill_every=args.kill_every, run_dir=self.dir,
                    acks=lambda: audit_mod.read_acks(self.dir), say=self.say,
                    witness_profile=self.profiles[0])
                chaos.start()
            self._progress(t0, deadline, counter, stop, bots)
        finally:  # also on Ctrl-C: no fault (and no restart) after this
            stop.set()
            if chaos is not None:
                chaos.finish()
            end = time.monotonic() + 90
            for b in bots:
                b.join(timeout=max(0.1, end - time.monotonic()))
                if b.is_alive():
                    b.terminate()
        load_s = time.time() - t0
        self.extra["ops_done"] = int(sum(counter))
        self.extra["bot_exit_codes"] = [b.exitcode for b in bots]
        return load_s, (chaos.kills if chaos else []), (chaos.faults if chaos else []), \
            (chaos.crash_audits if chaos else [])

    def _progress(self, t0, deadline, counter, stop, bots) -> None:
        args = self.args
        total = args.ops if args.ops > 0 else None

        def finished() -> bool:
            done = sum(counter)
            return (time.time() >= deadline or (total is not None and done >= total)
                    or not any(b.is_alive() for b in bots))

        if args.no_progress or not getattr(self.out, "isatty", lambda: False)():
            last = time.time()
            while not finished():
                time.sleep(0.1)
                if time.time() - last >= 10:
                    last = time.time()
                    self.say(f"  {time.time() - t0:5.0f} s  {sum(counter):>8} ops")
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        by_ops = total is not None
        with Progress(TextColumn("[bold]stress"), BarColumn(),
                      MofNCompleteColumn() if by_ops else TextColumn("{task.fields[ops]} ops"),
                      TextColumn("{task.fields[rate]:>8.0f} ops/s"), TimeElapsedColumn(),
                      console=Console(file=self.out), transient=False) as bar:
            task = bar.add_task("load", total=total or (deadline - t0), ops=0, rate=0.0)
            while not finished():
                time.sleep(0.2)
                done = sum(counter)
                elapsed = max(time.time() - t0, 1e-9)
                bar.update(task, completed=done if by_ops else elapsed, ops=done,
                           rate=done / elapsed)

    def settle(self) -> audit_mod.Audit:
        """Every acknowledged close must be done within a few ticks, kills or not (a
        close is recorded before the broker is asked, and a restart asks again)."""
        a = audit_mod.Audit()
        closes = [x for x in audit_mod.read_acks(self.dir) if x["op"] == "close"]
        deadline = time.monotonic() + 10
        pending = closes
        with self.client() as c:
            while pending and time.monotonic() < deadline:
                time.sleep(0.5)
                status = {}
                for pid in {x["pid"] for x in pending}:
                    for p in audit_mod.list_all(c, "position.list", "positions", pid):
                        status[p["position_id"]] = (p["status"], p["close_reason"])
                done = [x for x in pending if status.get(x["position_id"], ("",))[0] == "CLOSED"]
                for ack in done:
                    if status[ack["position_id"]][1] != "manual":
                        a.fail(f"position {ack['position_id']}: close acknowledged at "
                               f"{ack['t']:.1f} s, but it was closed by "
                               f"{status[ack['position_id']][1]}")
                pending = [x for x in pending if x not in done]
        for ack in pending:
            a.fail(f"position {ack['position_id']}: close acknowledged at {ack['t']:.1f} s, "
                   "still open 10 s after the load")
        self.extra["closes_acknowledged"] = len(closes)
        a.count("acknowledged closes", len(closes))
        return a

    def flatten(self, timeout_s: float = 30.0) -> int:
        """Close every open position and cancel every working order; wait until none is
        left. Returns how many positions were closed."""
        from capflow.protocol.client import ClientError

        closed = 0
        deadline = time.monotonic() + timeout_s
        with self.client() as c:
            while time.monotonic() < deadline:
                left = 0
                for pid in self.profiles:
                    for p in audit_mod.list_all(c, "position.list", "positions", pid):
                        if p["status"] == "OPEN":
                            left += 1
                            try:
                                c.call("position.close", profile_id=pid,
                                       position_id=p["position_id"])
                                closed += 1
                            except ClientError as exc:
                                if exc.code not in ("CONFLICT", "NOT_FOUND"):
                                    raise
                    for o in audit_mod.list_all(c, "order.list", "orders", pid):
                        if o["status"] in ("OPEN", "PARTIALLY_FILLED"):
                            left += 1
                            try:
                                c.call("order.cancel", profile_id=pid, order_id=o["order_id"])
                            except ClientError as exc:
                                if exc.code not in ("CONFLICT", "NOT_FOUND"):
                                    raise
                if not left:
                    return closed
                time.sleep(0.5)
        raise StressError(f"positions still open {timeout_s:g} s after asking to close them")

    # -- the whole run ----------------------------------------------------------------

    def _after_load(self, result: audit_mod.Audit, crash_audits: list[dict]) -> None:
        self.extra["crash_point_audits"] = crash_audits
        for i, ca in enumerate(crash_audits):
            for v in ca["violations"]:
                result.fail(f"at kill {i + 1}: {v}")
            result.count("crash-point audits")
        for i, code in enumerate(self.extra.get("bot_exit_codes") or []):
            if code != 0:
                result.fail(f"bot {i} exited with code {code}: its share of the load did "
                            "not run to the end")
        if self.server is not None and not self.server.alive():
            self.server.start()  # the load may end while a restart is due
        result.merge(self.settle())
        with self.client() as c:
            wire, _ = audit_mod.audit_wire(c, self.profiles)
        result.merge(wire, "open book: ")
        self.extra["close_requests_to_flatten"] = self.flatten()
        with self.client() as c:
            flat, ledgers = audit_mod.audit_wire(c, self.profiles)
        result.merge(flat, "flat book: ")
        self.extra["final_ledgers"] = ledgers
        if self.server is not None:
            self.server.stop()
        if not self.url:
            self.say("no storage URL (--endpoint without --storage-url): audited through "
                     "the wire only")
            return
        # a server of our own is stopped: wait for its storage process to let go; another
        # one's keeps the database, read as it is (the book is flat: nothing moves)
        quiet = quiet_storage(self.url) if self.server else contextlib.nullcontext()
        with quiet:
            result.merge(audit_mod.audit_storage(self.url, audit_mod.read_acks(self.dir),
                                                 closes=True), "storage: ")
            result.merge(audit_mod.compare_ledgers(ledgers, self.url), "storage: ")

    def run(self) -> int:
        from capflow.bench.stress import report

        self.dir.mkdir(parents=True, exist_ok=True)
        self.say(f"run folder: {self.dir}")
        started_at = datetime.now(UTC).isoformat()
        result = audit_mod.Audit()
        kills: list[dict] = []
        faults: list[dict] = []
        load_s = 0.0
        try:
            self.start_server()
            self.create_profiles()
            load_s, kills, faults, crash_audits = self.load()
            self._after_load(result, crash_audits)
        except Exception as exc:  # still a report, with what was found so far
            result.fail(f"the run stopped early: {type(exc).__name__}: {exc}")
            if self.chaos is not None and not kills:
                kills, faults = self.chaos.kills, self.chaos.faults
        finally:
            if self.chaos is not None:
                for error in self.chaos.errors:
                    result.fail(f"chaos: {error}")
            if self.server is not None:
                self.server.stop()
        requests = _read_requests(self.dir)
        internal = sum(1 for r in requests if r[3] == "INTERNAL")
        if internal:
            result.fail(f"{internal} request(s) answered INTERNAL (see server.out)")
        meta = {"seed": self.args.seed, "clients": self.args.clients,
                "profiles": len(self.profiles), "duration_s": self.args.duration,
                "ops": self.args.ops, "mix": self.mix, "chaos": sorted(self.modes),
                "kill_every_s": self.args.kill_every if "kill" in self.modes else None,
                "endpoint": self.endpoint, "storage": self.url, "started_at": started_at,
                "load_s": round(load_s, 3)}
        paths = report.write_report(self.dir, meta=meta, requests=requests, kills=kills,
                                    faults=faults, audit=result.as_dict(), duration_s=load_s,
                                    extra=self.extra)
        summary = report.summarize(requests, load_s or 1.0, faults=faults)
        self.say(f"{summary['requests']} requests in {load_s:.1f} s "
                 f"({summary['throughput_per_s']:.0f}/s, ok {summary['ok']}), "
                 f"{len(kills)} kill(s), {len(faults)} fault window(s)")
        self.say(f"audit: {'PASS' if result.ok else 'FAIL'} "
                 f"({sum(result.checked.values())} checks, {len(result.violations)} "
                 "violation(s))")
        for v in result.violations[:20]:
            self.say(f"  - {v}")
        self.say(f"report: {paths['markdown']}")
        self.say(f"run folder: {self.dir}")
        return 0 if result.ok else 1


def _read_requests(run_dir: Path) -> list[tuple[float, str, float, str]]:
    import json

    rows = []
    for path in sorted(run_dir.glob("bot-*.requests.jsonl")):
        for line in path.read_text().splitlines():
            try:
                t, op, ms, code = json.loads(line)
            except (ValueError, TypeError):
                continue  # a line cut short by a bot that was stopped
            rows.append((t, op, ms, code))
    rows.sort()
    return rows


def command(cfg, args, out=sys.stdout) -> int:
    from capflow.actors.model.settings import ConfigError

    try:
        run = Run(args, out, cfg.server.request_timeout_s)
    except StressError as exc:
        raise ConfigError(str(exc)) from None
    return run.run()


__all__ = ["MODES", "Run", "StressError", "command"]
