"""`capflow call risk.check` for a reader: the answer as a table of its checks, then
when a failed protection passes by itself and how the entry was shrunk."""

from __future__ import annotations

from typing import Any


def risk_table(r: dict[str, Any]) -> str:
    """A `risk.check` answer for a reader: one row per check with ok or FAILED, its
    limit, value and headroom; the reason code only on the checks that failed (every
    check carries the code it *would* fail with, passed or not)."""
    rows = [("check", "result", "limit", "value", "headroom", "fails with")]
    for c in r.get("checks", []):
        passed = c.get("ok")
        rows.append((str(c.get("check")), "ok" if passed else "FAILED",
                     _cell(c.get("limit")), _cell(c.get("value")), _cell(c.get("headroom")),
                     "" if passed else str(c.get("code"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"risk.check {r.get('profile_id')}: {r.get('side')} {r.get('qty')} "
             f"{r.get('symbol')} at {r.get('price')} (notional {r.get('notional')}, "
             f"reserves {r.get('amount')}, account {r.get('account_id')}, "
             f"tp {r.get('tp_price')}, sl {r.get('sl_price')})", ""]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip())
    lines.append("")
    lines += _waits_and_sizing(r)
    if r.get("allowed"):
        lines.append("allowed: every check passes; a signal like this would be placed now")
    else:
        failed = sum(1 for c in r.get("checks", []) if not c.get("ok"))
        lines.append(f"NOT allowed: {failed} check(s) failed; a signal would be refused "
                     f"with {r.get('reason')}")
    return "\n".join(lines)


def _waits_and_sizing(r: dict[str, Any]) -> list[str]:
    """The lines under a `risk.check` table: when a protection that failed passes by
    itself, and how the entry was shrunk (``sizing = "shrink"``)."""
    lines = [f"{c.get('check')}: entries wait until {c['until']} ({_cell(c.get('headroom'))}"
             " s of headroom)" for c in r.get("checks", []) if c.get("until")]
    z = r.get("sizing")
    if z and z.get("granted_qty") is not None:
        lines.append(f"sizing: shrunk from {z.get('requested_qty')} to {z['granted_qty']} "
                     f"(bound by {z.get('bound_by')}: {z.get('code')}, limit "
                     f"{_cell(z.get('limit'))})")
    elif z:
        lines.append(f"sizing: {z.get('requested_qty')} cannot shrink to fit "
                     f"{z.get('bound_by')} ({z.get('code')}, limit {_cell(z.get('limit'))}) "
                     f"at or above the minimum {z.get('min_qty') or 'of one lot'}")
    return [*lines, ""] if lines else lines


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(map(_cell, value))
    return "-" if value is None else str(value)
