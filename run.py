"""capflow's entry point (also installed as the `capflow` command).

    capflow serve                         start capflow and run until SIGINT / SIGTERM
                                          (exit status 1 if its gateway fails)
    capflow profile create ID AMOUNT      create a trading profile with its ledger
    capflow profile list                  one line per profile
    capflow profile show ID               a profile, its ledger and its trading state
    capflow call OP [KEY=VALUE ...]       send one request to a running server
    capflow events [TOPIC ...]            print a running server's event stream
    capflow halt / resume [--profile ID | --account ID]
                                          the kill switch (global, one profile, one account)
    capflow flatten --profile ID | --account ID | --all
                                          halt, cancel entries, close every position
    capflow account get ID | reconcile ID
                                          a broker account: venue balances, last reconcile
    capflow keys generate [CLIENT ...]    make CURVE keys (server, and one per client)
    capflow stats [--profile ID] [--group-by strategy|symbol|exchange]
                                          trading statistics
    capflow report [--profile ID] [--out FILE.png]
                                          the statistics and an equity-curve PNG
    capflow bench [--quick]               the benchmarks, each beside its same-run baseline
    capflow stress [--chaos] [...]        simulated bots, chaos, an audit and a report
    capflow top                           a live view of a running server

Options common to all: ``--config FILE`` (TOML; default ``./capflow.toml`` if present),
and ``CAPFLOW_*`` environment variables (``CAPFLOW_STORAGE__URL=...``).

A command that talks to a server first checks, within about a second, that one answers
(capflow.protocol.probe), and says so when none does. `profile`, `stats` and `report`
go through the server that answers at the endpoint, or open the storage themselves when
none does (capflow.cli has the rule and the commands that talk to a server).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from decimal import Decimal

from capflow import cli_account
from capflow.actors.config import Config, load_config
from capflow.actors.logs import setup_logging
from capflow.actors.model.errors import CapflowError
from capflow.actors.model.money import fmt
from capflow.actors.model.settings import ConfigError
from capflow.cli import (
    call_command,
    curve_keys,
    events_command,
    exit_status,
    flatten_command,
    halt_command,
    profile_command,
)
from capflow.cli_stats import stats_data
from capflow.protocol.probe import NoServer


class _Parser(argparse.ArgumentParser):
    """A parser whose epilog is made when help is shown (`lazy_epilog`), so that building
    the parser imports nothing it does not need."""

    lazy_epilog = None

    def format_help(self) -> str:
        if self.lazy_epilog is not None:
            self.epilog = self.lazy_epilog()
        return super().format_help()


def seconds(text: str) -> float:
    """A duration option: a finite number of seconds above zero (a negative timeout
    would wait for ever, nan or inf fail later, 0 always times out)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="capflow", description="capital and order "
                                "management core for trading bots")
    p.add_argument("--config", help="TOML config file (default: ./capflow.toml if present)")
    p.add_argument("--log-level", help="override [log] level (DEBUG, INFO, WARNING, ...)")
    p.add_argument("--json-logs", action="store_true", help="log JSON lines")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           parser_class=_Parser)
    sub.add_parser("serve", help="start capflow and run until SIGINT / SIGTERM")
    prof = sub.add_parser("profile", help="create, list and show trading profiles")
    psub = prof.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = psub.add_parser("create", help="create a profile with its capital ledger")
    c.add_argument("profile_id")
    c.add_argument("allocated", help="capital allocated to the profile, e.g. 10000")
    c.add_argument("--currency", help="currency (default: [ledger] default_currency)")
    c.add_argument("--risk-profile")
    c.add_argument("--account-id")
    psub.add_parser("list", help="list profiles")
    s = psub.add_parser("show", help="show one profile and its ledger")
    s.add_argument("profile_id")
    for action in (c, psub.choices["list"], s):
        _storage_options(action)
    call = sub.add_parser("call", help="send one request to a running server",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    call.lazy_epilog = _ops_help
    call.add_argument("op", help="operation, e.g. ledger.get (every op is listed below)")
    call.add_argument("args", nargs="*", metavar="KEY=VALUE",
                      help="arguments; values are read as TOML values when they parse "
                           "(numbers, true/false, quoted strings), else as text")
    call.add_argument("--timeout", type=seconds, default=5.0, help="seconds per attempt")
    call.add_argument("--json", action="store_true",
                      help="print the result as JSON also where there is a table "
                           "(risk.check)")
    _client_options(call)
    ev = sub.add_parser("events", help="print a running server's event stream")
    ev.add_argument("topics", nargs="*", metavar="TOPIC",
                    help="topic prefixes, e.g. reservation.alpha (default: everything)")
    ev.add_argument("--count", type=int, default=0, help="stop after this many events")
    _client_options(ev, "the events endpoint (default: [server] events_endpoint)")
    ev.add_argument("--request-endpoint", help="the server's request endpoint, asked first "
                    "whether it runs (default: [server] endpoint, unless --endpoint is "
                    "given)")
    for name, text in (("stats", "trading statistics (from the server, or from storage "
                                 "when none runs)"),
                       ("report", "statistics and an equity-curve PNG")):
        st = sub.add_parser(name, help=text)
        st.add_argument("--profile", help="one profile (default: all)")
        if name == "stats":
            st.add_argument("--group-by", choices=("strategy", "symbol", "exchange"))
        else:
            st.add_argument("--out", help="PNG path (default: reports/equity-<profile>.png)")
        _storage_options(st)
    for name, text in (("halt", "stop new exposure and cancel working entries: every "
                                "profile (the global kill switch), or one with --profile, "
                                "or a broker account's with --account; exits go on"),
                       ("resume", "lift a halt: every profile, or one with --profile or "
                                  "--account")):
        hs = sub.add_parser(name, help=text)
        where = hs.add_mutually_exclusive_group()
        where.add_argument("--profile", help="one profile (default: the global kill switch)")
        where.add_argument("--account", help="every profile of one broker account")
        hs.add_argument("--reason", default="", help="why (recorded with who)")
        if name == "halt":
            hs.add_argument("--reduce-only", action="store_true",
                            help="REDUCE_ONLY instead of HALTED")
        hs.add_argument("--timeout", type=seconds, default=5.0, help="seconds per attempt")
        _client_options(hs)
    fl = sub.add_parser("flatten", help="halt, cancel every working entry and close every "
                        "open position: of one profile, one broker account, or everything")
    scope = fl.add_mutually_exclusive_group(required=True)
    scope.add_argument("--profile", help="one profile")
    scope.add_argument("--account", help="every profile of one broker account")
    scope.add_argument("--all", action="store_true", help="every profile")
    fl.add_argument("--reason", default="", help="why (recorded with who)")
    fl.add_argument("--key", help="idempotency key: the same key again answers what the "
                    "first flatten did (default: a new one, printed)")
    fl.add_argument("--timeout", type=seconds, default=30.0, help="seconds per attempt")
    _client_options(fl)
    cli_account.add_parser(sub, _client_options)
    bench = sub.add_parser("bench", help="run the benchmarks in bench/, each figure beside "
                           "the baseline it measured in the same run",
                           description="Run the benchmarks in bench/, each figure beside the "
                           "baseline it measured in the same run, and the aim its script "
                           "states. An aim is set for the machine class capflow is measured "
                           "on (2 CPUs); 'NOT met' is information, not a failure. Exit "
                           "status 0: every benchmark ran; 1: one failed.")
    bench.add_argument("--quick", action="store_true",
                       help="short settings (the whole suite in well under 2 minutes)")
    bench.add_argument("--only", metavar="NAMES",
                       help="comma-separated, from ledger,wire,oms (default: all)")
    bench.add_argument("--json", metavar="FILE", help="also write every figure to this file")
    bench.add_argument("--out-dir", metavar="DIR",
                       help="keep each script's JSON and output in this directory")
    bench.add_argument("--verbose", action="store_true",
                       help="pass each script's own output through")
    _stress_parser(sub)
    top = sub.add_parser("top", help="a live terminal view of a running server: requests/s "
                         "per op, latency, profiles, open positions, breakers")
    top.add_argument("--interval", type=seconds, default=1.0, help="seconds between refreshes")
    top.add_argument("--once", action="store_true",
                     help="print one view (two readings --interval apart) and exit")
    top.add_argument("--profiles", type=int, default=20, metavar="N",
                     help="show at most N profiles (default 20)")
    top.add_argument("--timeout", type=seconds, default=2.0, help="seconds per request")
    _client_options(top)
    keys = sub.add_parser("keys", help="CURVE keys")
    ksub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    gen = ksub.add_parser("generate", help="make the server key pair and client key pairs")
    gen.add_argument("clients", nargs="*", metavar="CLIENT", help="client names")
    gen.add_argument("--dir", help="key directory (default: [security] keys_dir)")
    return p


def _stress_parser(sub) -> None:
    st = sub.add_parser("stress", help="many simulated bots against a server, with chaos; "
                        "then an audit of every ledger and a report")
    st.add_argument("--endpoint", help="a running server (default: start one here, with its "
                    "own SQLite database in the run folder)")
    st.add_argument("--storage-url", help="with --endpoint: that server's database, for the "
                    "storage audit (default: audit through the wire only)")
    st.add_argument("--clients", type=int, default=4, help="bot processes (default 4)")
    st.add_argument("--profiles", type=int, default=4, help="trading profiles (default 4)")
    st.add_argument("--duration", type=seconds, default=30.0,
                    help="seconds of load (default 30)")
    st.add_argument("--ops", type=int, default=0,
                    help="stop after this many operations in all (default: by --duration)")
    st.add_argument("--seed", type=int, default=1, help="seeds the bots and the chaos")
    st.add_argument("--mix", help="operation weights, e.g. quote=3,reserve=2,release=2,"
                    "signal=2,close=1,query=2")
    st.add_argument("--chaos", nargs="?", const="kill,stall,storage", default="",
                    metavar="MODES", help="faults to inject, from kill (SIGKILL and "
                    "restart the server), stall (a broker adapter hangs), storage (the "
                    "database is locked); --chaos alone: all three")
    st.add_argument("--kill-every", type=seconds, default=10.0, metavar="S",
                    help="seconds between kills, on average (default 10)")
    st.add_argument("--out", metavar="DIR",
                    help="run folder (default: reports/stress/<time>-seed<seed>)")
    st.add_argument("--no-progress", action="store_true", help="no progress bar")


def _client_options(p: argparse.ArgumentParser,
                    endpoint: str = "server endpoint (default: [server] endpoint)") -> None:
    p.add_argument("--endpoint", help=endpoint)
    p.add_argument("--server-key", help="CURVE: the server's public key file (server.key)")
    p.add_argument("--client-key", help="CURVE: this client's secret key file")


def _storage_options(p: argparse.ArgumentParser) -> None:
    """The options of a command that goes through the server answering at the endpoint,
    or opens the storage when none answers."""
    _client_options(p, "go through the server at this endpoint (default: the one at "
                       "[server] endpoint if it answers, else the storage directly)")
    p.add_argument("--timeout", type=seconds, default=10.0,
                   help="seconds per attempt, through a server")


def _ops_help() -> str:
    from capflow.protocol.catalog import help_text

    return help_text()


def _config(args: argparse.Namespace) -> Config:
    overrides = {}
    if args.log_level or args.json_logs:
        overrides["log"] = {k: v for k, v in (("level", args.log_level),
                                               ("json", args.json_logs or None)) if v}
    return load_config(args.config, **overrides)


def keys_command(cfg: Config, args: argparse.Namespace, out=None) -> int:
    out = out or sys.stdout
    from capflow.protocol.auth import generate, warn_if_readable, warn_if_writable

    folder = args.dir or cfg.security.keys_dir
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ConfigError(f"--dir {folder}: that is a file, not a key folder")
    try:
        made = generate(folder, args.clients)
    except OSError as exc:
        print(f"capflow: cannot write the keys to {folder}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    for path in made:
        print(f"wrote {path}", file=out)
    warn_if_readable(folder)  # older keys, or keys copied with their modes lost
    warn_if_writable(folder)
    print(f"grant profiles to clients in {folder}/clients.toml, then set "
          "[security] curve = true", file=out)
    return 0


def bench_command(cfg: Config, args: argparse.Namespace, out=None) -> int:
    """`bench`: capflow.bench.suite (every bench script, each beside its baseline)."""
    from capflow.bench import suite

    try:
        names = suite.parse_only(args.only)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.json and (cause := suite.writable(args.json)) is not None:
        print(f"capflow: cannot write the figures to {args.json}: {cause}", file=sys.stderr)
        return 1
    if args.out_dir and not _folder("--out-dir", args.out_dir):
        return 1
    return suite.command(names, args.quick, json_path=args.json, out_dir=args.out_dir,
                         verbose=args.verbose, out=out)


def _folder(option: str, folder: str) -> bool:
    """Make the folder a command writes its files in, before it runs for minutes; when it
    cannot be made, say so in one line (False)."""
    try:
        os.makedirs(folder, exist_ok=True)
        return True
    except OSError as exc:
        cause = ("that is a file" if os.path.exists(folder) and not os.path.isdir(folder)
                 else exc.strerror or str(exc))
        print(f"capflow: cannot make the folder {option} {folder}: {cause}", file=sys.stderr)
        return False


def stress_command(cfg: Config, args: argparse.Namespace, out=None) -> int:
    """`stress`: capflow.bench.stress (bots, chaos, audit, report). With --endpoint, a
    server must answer there before anything starts."""
    from capflow.bench import stress
    from capflow.protocol.probe import probe

    if args.endpoint:
        probe(args.endpoint)
    if args.out and not _folder("--out", args.out):
        return 1
    return stress.command(cfg, args, out=out or sys.stdout)


def top_command(cfg: Config, args: argparse.Namespace, out=None) -> int:
    from capflow.protocol.top import command

    return command(cfg, args, curve=curve_keys(args), out=out or sys.stdout)


def _print_stats(stats, out, title: str) -> None:
    """`stats`: a `Stats`, or the map of `stats.get` (decimals as strings)."""
    from capflow.actors.model.stats import stats_map

    print(title, file=out)
    for key, value in (stats if isinstance(stats, dict) else stats_map(stats)).items():
        text = "-" if value is None else fmt(value) if isinstance(value, Decimal) else value
        print(f"  {key:<22}{text:>18}", file=out)


def _mixed(currency: str, out) -> None:
    if "+" in currency:
        print(f"note: the profiles' currencies differ ({currency}); their amounts are "
              "summed as they are", file=out)


def stats_command(cfg: Config, args: argparse.Namespace, out=None) -> int:
    out = out or sys.stdout
    # through the server that answers at the endpoint, else from the storage
    data = stats_data(cfg, args, args.profile, args.group_by)
    _print_stats(data.stats, out, f"statistics of {args.profile or 'all profiles'}")
    for key, group in (data.groups or {}).items():
        _print_stats(group, out, f"{args.group_by} = {key or '(none)'}")
    _mixed(data.currency, out)
    return 0


def report_command(cfg: Config, args: argparse.Namespace, out=None) -> int:
    out = out or sys.stdout
    from datetime import UTC, datetime
    from pathlib import Path

    from capflow.actors.model.stats import equity_report
    from capflow.actors.report import FORMATS, amount, marked_text, write_equity_png

    name = f"equity-{args.profile or 'all'}.png"
    path = Path(args.out or f"reports/{name}")
    if path.is_dir():
        path = path / name
    if (path.suffix.lower().lstrip(".") or "png") not in FORMATS:
        raise ConfigError(f"--out {path}: the report is written as .png, .pdf or .svg "
                          "(the suffix names the format)")
    # everything through the server that answers, or everything from the storage
    data = stats_data(cfg, args, args.profile)
    _print_stats(data.stats, out, f"statistics of {args.profile or 'all profiles'}")
    currency = data.currency
    report = equity_report(data.positions, start=data.initial or Decimal(0),
                           marks=data.marks, as_of=datetime.now(UTC))
    print(f"equity from the allocation {amount(report.start, currency)} to "
          f"{amount(report.points[-1].equity, currency)} after "
          f"{report.closed_trades} closed trade(s)", file=out)
    if report.marked is not None:
        print(marked_text(report, currency), file=out)
    _mixed(currency, out)
    try:
        written = write_equity_png(report, path, currency=currency,
                                   title=f"capflow equity: {args.profile or 'all profiles'}")
    except OSError as exc:
        print(f"capflow: cannot write the report to {path}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    print(f"wrote {written}", file=out)
    return 0


#: what a command that changes something asks of the server, for the words of Ctrl-C
_CHANGES = {"halt": "the halt", "resume": "the resume", "flatten": "the flatten",
            "profile": "the profile creation"}


def _interrupted(args: argparse.Namespace) -> str:
    """One line for Ctrl-C: a request that may change something may or may not have
    been carried out (its answer was not read)."""
    if args.command == "call":
        what = f"{args.op}"
    elif args.command == "profile" and args.action != "create":
        what = None
    else:
        what = _CHANGES.get(args.command)
    if what is None:
        return "interrupted"
    return (f"interrupted: the outcome of {what} is unknown (the server may have carried "
            "it out); look before repeating it")


def main(argv: Sequence[str] | None = None) -> int:
    from capflow.protocol.client import ClientError

    args = _parser().parse_args(argv)
    try:
        cfg = _config(args)
    except ConfigError as exc:
        print(f"capflow: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.log if args.command == "serve" else
                  cfg.log.__class__(level="WARNING", json=cfg.log.json))
    try:
        if args.command == "serve":
            from capflow.cli_serve import serve

            return serve(cfg)
        commands = {"profile": profile_command, "call": call_command,
                    "events": events_command, "keys": keys_command,
                    "stats": stats_command, "report": report_command,
                    "halt": halt_command, "resume": halt_command,
                    "flatten": flatten_command, "account": cli_account.account_command,
                    "bench": bench_command, "stress": stress_command,
                    "top": top_command}
        return commands[args.command](cfg, args)
    except NoServer as exc:
        print(f"capflow: {exc}", file=sys.stderr)
        return 1
    except (CapflowError, ClientError) as exc:
        field = exc.details.get("field")
        where = f" ({field})" if field else ""
        print(f"capflow: {exc.code}{where}: {exc.message}", file=sys.stderr)
        return exit_status(exc.code)
    except ConfigError as exc:
        print(f"capflow: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"capflow: {_interrupted(args)}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`capflow ... | head`): no traceback, and none at exit
        # when Python flushes stdout again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
