"""An account manager's side of reconciliation and of `account.get` (the handlers of
`Reconcile` and `GetAccount`, and what it does with a `Reconciled` report).

A live adapter reconciles its venue account with capflow's rows at connect, every
``reconcile_every_s`` and when asked (`brokers.reconcile` says what the report holds).
The manager keeps the last report, takes the account's capital from it (what profiles
may be allocated, capped by ``max_live_capital`` in `AccountManagerActor._claim`), and on
a difference nothing explains puts the whole account in ``REDUCE_ONLY`` (the account
state machinery of `actors.safety`, as an unbookable fill does: ``changed_by``
``reconcile``) and raises a ``reconcile_difference`` alert, once per set of differences.
A paper account has no venue: it is never reconciled.
"""

from __future__ import annotations

from typing import Any

import pykka

from capflow.actors.account_messages import CancelEntries, GetAccount, Reconcile
from capflow.actors.alerts import CRITICAL, Alert
from capflow.actors.model.errors import Conflict, Unavailable
from capflow.actors.reply import Reply
from capflow.brokers.reconcile import Reconciled

LATER = object()  # the account manager's: answered later


def reconcile(mgr, msg: Reconcile, reply: Reply) -> Any:
    adapter = mgr.adapter
    if not hasattr(adapter, "reconcile"):
        if not msg.wait:
            return False
        raise Conflict(f"broker account {mgr.account_id!r} is a paper account: it has no "
                       "venue to reconcile with", {"account_id": mgr.account_id})
    if msg.wait and not adapter.connected:
        raise Unavailable(f"broker account {mgr.account_id!r} is "
                          f"{adapter.connection.state.lower()}: it cannot be reconciled",
                          {"account_id": mgr.account_id, "state": adapter.connection.state})
    asked = adapter.reconcile()
    if msg.wait:  # answered by the cut taken for this request, not one under way before
        mgr.reconcile_waiters.append((asked or 0, reply))
    return LATER if msg.wait else True


def reconciled(mgr, e: Reconciled) -> None:
    """On the manager's thread: a report arrived."""
    waiters = [w for asked, w in mgr.reconcile_waiters if asked <= e.asked]
    mgr.reconcile_waiters = [(asked, w) for asked, w in mgr.reconcile_waiters
                             if asked > e.asked]
    if e.error is not None:
        for w in waiters:
            w.fail(Unavailable(f"reconciling {mgr.account_id!r} failed: {e.error}",
                               {"account_id": mgr.account_id}))
        return
    status = mgr.status
    status.last_reconcile = e
    capital = e.report.get("capital")
    if capital is not None:
        status.capital = capital
    answer = report_map(mgr.account_id, e)
    differences = e.report.get("differences", 0)
    if not differences:
        mgr.reconcile_seen = None
    else:
        seen = _signature(e.report)
        if seen != mgr.reconcile_seen:
            mgr.reconcile_seen = seen
            _differs(mgr, e, answer)
    for w in waiters:
        w.resolve(answer)


def _signature(report: dict) -> tuple:
    return (tuple(r["coin"] for r in report["balances"] if r["status"] == "differs"),
            tuple(r["coin"] for r in report["balances"] if _lock_differs(r)),
            tuple(o["venue_order_id"] for o in report["unknown_orders"]),
            tuple(f["fill_id"] for f in report["unknown_fills"]))


def _differs(mgr, e: Reconciled, answer: dict) -> None:
    r = e.report
    parts = [f"{row['coin']} venue {row['venue']['total']} vs capflow {row['capflow']}"
             + (f" + baseline {row['baseline']}" if row["baseline"] else "")
             for row in r["balances"] if row["status"] == "differs"]
    parts += [f"{row['coin']} locked at the venue {row['venue']['locked']} vs "
              f"{row['locked']['orders']} by the open orders"
              for row in r["balances"] if _lock_differs(row)]
    if r["unknown_orders"]:
        parts.append(f"{len(r['unknown_orders'])} open order(s) capflow did not send")
    if r["unknown_fills"]:
        parts.append(f"{len(r['unknown_fills'])} fill(s) of orders capflow did not send")
    reason = f"the venue and capflow disagree: {'; '.join(parts)}"
    if mgr._alert is not None:
        mgr._alert(Alert(kind="reconcile_difference", severity=CRITICAL, scope="account",
                         target=mgr.account_id, reason=reason, ts=e.ts,
                         details={"differences": r["differences"],
                                  "balances": [x for x in answer["balances"]
                                               if x["status"] == "differs"
                                               or _lock_differs(x)],
                                  "unknown_orders": answer["unknown_orders"],
                                  "unknown_fills": answer["unknown_fills"]}))
    if mgr._on_unbooked is not None and mgr._on_unbooked(reason):
        try:  # set just now: stop what is working, as any REDUCE_ONLY does
            mgr.actor_ref.tell((CancelEntries(None, reason), Reply()))
        except pykka.ActorDeadError:
            pass


def _lock_differs(row: dict) -> bool:
    return (row.get("locked") or {}).get("status") == "differs"


def report_map(account_id: str, e: Reconciled) -> dict:
    r = e.report
    return {"account_id": account_id, "at": r.get("ts", e.ts),
            "differences": r.get("differences", 0), "balances": r.get("balances", []),
            "unknown_orders": r.get("unknown_orders", []),
            "missed_fills": r.get("missed_fills", []),
            "unknown_fills": r.get("unknown_fills", []),
            "in_flight": r.get("in_flight", []), "capital": r.get("capital")}


def get_account(mgr, msg: GetAccount, reply: Reply) -> Any:
    adapter, status = mgr.adapter, mgr.status
    live = bool(getattr(adapter, "live", False))
    venue = adapter.venue_status() if hasattr(adapter, "venue_status") else None
    now = adapter.clock.now()
    answered = None if venue is None else venue["answered_at"]
    last = status.last_reconcile
    cap = status.capital_cap
    capital = status.capital if cap is None else min(status.capital, cap)
    return {
        "account_id": mgr.account_id, "mode": "live" if live else "paper",
        "connection": adapter.connection.state,
        "currency": adapter.config.currency,
        "balances": None if venue is None else venue["balances"],
        "data_age_s": None if answered is None else max(
            0.0, round((now - answered).total_seconds(), 3)),
        "last_reconcile": None if last is None else {
            "at": last.report.get("ts", last.ts),
            "differences": last.report.get("differences", 0),
            "report": report_map(mgr.account_id, last)},
        "capital": capital, "allocated": status.allocated,
        "max_live_capital": cap,
    }
