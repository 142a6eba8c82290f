"""Alerts: what an operator must hear of, at once.

Every automatic change of a trading state (a profile set REDUCE_ONLY because a booked
fill left it short, a ledger that disagreed with its rows at start, an account halted by
its loss limits), every breaker trip, every flatten, every cancel of working entries on
a halt, and every entry fill booked while entries were blocked is an `Alert`: published
on the event bus (the server sends it on the ``alert`` topic) and logged at WARNING or
above, in one place (`raise_alert`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from loguru import logger

#: who sets a trading state without a person asking (`changed_by`): an automatic halt
AUTOMATIC = frozenset({"ledger", "recovery", "account-risk", "reconcile"})

WARNING, CRITICAL = "warning", "critical"


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """One alert. `scope` is ``profile``, ``account`` or ``global``; `target` the profile
    or account id (None for global)."""

    kind: str
    severity: str
    scope: str
    target: str | None
    reason: str
    ts: datetime
    details: dict[str, Any] = {}


def raise_alert(publish, alert: Alert) -> None:
    """Log `alert` (WARNING, or ERROR when critical) and publish it on the bus."""
    where = alert.scope if alert.target is None else f"{alert.scope} {alert.target}"
    text = f"ALERT {alert.kind} ({where}): {alert.reason}"
    if alert.severity == CRITICAL:
        logger.error(text)
    else:
        logger.warning(text)
    try:
        publish([alert])
    except Exception:
        logger.exception("publishing an alert failed")
