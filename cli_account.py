"""`capflow account get ID` and `capflow account reconcile ID`: a broker account through
the running server (`account.get`, `account.reconcile`), as text (``--json``: the answer
as it came)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from capflow.actors.config import Config
from capflow.cli import connect


def add_parser(sub, client_options) -> None:
    ac = sub.add_parser("account", help="a broker account: its venue balances, connection "
                        "and last reconcile, or reconcile it now")
    asub = ac.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text, timeout in (
            ("get", "connection, balances, last reconcile, data age, mode, capital", 5.0),
            ("reconcile", "reconcile a live account with its venue now; both sides of "
                          "every difference", 60.0)):
        p = asub.add_parser(name, help=text)
        p.add_argument("account", help="the broker account's id")
        p.add_argument("--json", action="store_true", help="the answer as JSON")
        p.add_argument("--timeout", type=float, default=timeout, help="seconds per attempt")
        client_options(p)


def account_command(cfg: Config, args: argparse.Namespace, out=None) -> int:
    out = out or sys.stdout
    with connect(cfg, args, retries=1 if args.action == "reconcile" else 3) as client:
        if args.action == "get":
            r = client.account_get(args.account)
            text = get_text(r)
        else:
            r = client.account_reconcile(args.account)
            text = report_text(r)
    print(json.dumps(r, indent=2, default=str) if args.json else text, file=out)
    return 0


def _v(value: Any) -> str:
    return "-" if value is None else str(value)


def get_text(r: dict) -> str:
    lines = [f"account {r['account_id']} ({r['mode']}): {r['connection']}, "
             f"currency {r['currency']}",
             f"  capital {_v(r['capital'])} (max_live_capital {_v(r['max_live_capital'])}),"
             f" allocated {_v(r['allocated'])}",
             f"  data age {_v(r['data_age_s'])} s"]
    if r["balances"] is not None:
        lines.append("  balances (coin: free / locked):")
        lines += [f"    {coin}: {b['free']} / {b['locked']}"
                  for coin, b in r["balances"].items()]
    last = r["last_reconcile"]
    if last is None:
        lines.append("  last reconcile: none")
    else:
        lines.append(f"  last reconcile: {last['at']}, {last['differences']} difference(s)")
        if last["differences"]:
            lines += report_text(last["report"]).splitlines()[1:]
    return "\n".join(lines)


def report_text(r: dict) -> str:
    lines = [f"account {r['account_id']} reconciled at {r['at']}: "
             f"{r['differences']} difference(s); capital {_v(r['capital'])}"]
    for b in r["balances"]:
        v = b["venue"]
        lines.append(f"  {b['coin']:<8} {b['status']:<9} venue {v['total']} (free "
                     f"{v['free']}, locked {v['locked']})  capflow {b['capflow']}  "
                     f"baseline {b['baseline']}  difference {b['difference']}")
        lock = b.get("locked") or {}
        if lock.get("status") == "differs":
            lines.append(f"  {'':<8} locked    venue {v['locked']}  open orders "
                         f"{lock['orders']}  difference {lock['difference']}")
    for o in r["unknown_orders"]:
        lines.append(f"  unknown order {o['venue_order_id']} ({_v(o['client_order_id'])}): "
                     f"{o['side']} {o['qty']} {o['symbol']} at {o['price']}")
    for f in r["unknown_fills"]:
        lines.append(f"  unknown fill {f['fill_id']} ({_v(f['client_order_id'])}): "
                     f"{f['side']} {f['qty']} {f['symbol']} at {f['price']}")
    for f in r["missed_fills"]:
        lines.append(f"  booked now: fill {f['fill_id']} ({f['booked_as']}): {f['side']} "
                     f"{f['qty']} {f['symbol']} at {f['price']}")
    if r["in_flight"]:
        lines.append(f"  in flight (not compared): {', '.join(r['in_flight'])}")
    return "\n".join(lines)
