"""capflow's entry point (also installed as the `capflow` command).

    capflow serve                         start capflow and run until SIGINT / SIGTERM
    capflow profile create ID AMOUNT      create a trading profile with its ledger
    capflow profile list                  one line per profile
    capflow profile show ID               a profile, its ledger and its trading state

Options common to all: ``--config FILE`` (TOML; default ``./capflow.toml`` if present),
and ``CAPFLOW_*`` environment variables (``CAPFLOW_STORAGE__URL=...``). The profile
commands open the storage directly and so need it not to be owned by a running server.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from loguru import logger

from actors.config import Config, ConfigError, load_config
from actors.errors import CapflowError
from actors.logs import setup_logging
from actors.money import fmt

BUCKETS = ("allocated", "held", "reserved_for_orders", "reserved_for_positions",
           "realized_pnl", "fees", "available")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="capflow", description="capital and order "
                                "management core for trading bots")
    p.add_argument("--config", help="TOML config file (default: ./capflow.toml if present)")
    p.add_argument("--log-level", help="override [log] level (DEBUG, INFO, WARNING, ...)")
    p.add_argument("--json-logs", action="store_true", help="log JSON lines")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
    return p


def _config(args: argparse.Namespace) -> Config:
    overrides = {}
    if args.log_level or args.json_logs:
        overrides["log"] = {k: v for k, v in (("level", args.log_level),
                                               ("json", args.json_logs or None)) if v}
    return load_config(args.config, **overrides)


def serve(cfg: Config) -> int:
    from actors.system import System

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    system = System(cfg).start()
    logger.info("capflow is running ({}); SIGINT or SIGTERM stops it", cfg.environment)
    try:
        stop.wait()
    finally:
        logger.info("stopping: finishing in-flight work and flushing storage")
        system.stop()
    return 0


def _show(view, out) -> None:
    p, led = view.profile, view.ledger
    print(f"profile       {p.profile_id}", file=out)
    print(f"currency      {p.currency}", file=out)
    print(f"state         {p.state}" + (f" ({p.state_reason})" if p.state_reason else ""),
          file=out)
    print(f"account       {p.account_id or '-'}", file=out)
    print(f"risk profile  {p.risk_profile or '-'}", file=out)
    for name in BUCKETS:
        print(f"{name:<24}{fmt(getattr(led, name)):>20}", file=out)


def profile_command(cfg: Config, args: argparse.Namespace, out=sys.stdout) -> int:
    from actors.system import System

    with System(cfg) as system:
        if args.action == "create":
            view = system.create_profile(args.profile_id, args.allocated,
                                         currency=args.currency,
                                         risk_profile=args.risk_profile,
                                         account_id=args.account_id)
            _show(view, out)
        elif args.action == "show":
            _show(system.get_profile(args.profile_id), out)
        else:
            profiles = system.list_profiles()
            print(f"{'PROFILE':<32} {'STATE':<12} {'CURRENCY':<8} {'AVAILABLE':>18}", file=out)
            for p in profiles:
                led = system.ledger(p.profile_id)
                print(f"{p.profile_id:<32} {p.state:<12} {p.currency:<8} "
                      f"{fmt(led.available):>18}", file=out)
            print(f"{len(profiles)} profile(s)", file=out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
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
            return serve(cfg)
        return profile_command(cfg, args)
    except CapflowError as exc:
        field = exc.details.get("field")
        where = f" ({field})" if field else ""
        print(f"capflow: {exc.code}{where}: {exc.message}", file=sys.stderr)
        return 2 if exc.code in {"INVALID_ARGUMENT", "NOT_FOUND", "CONFLICT",
                                 "INSUFFICIENT_CAPITAL"} else 1
    except ConfigError as exc:
        print(f"capflow: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
