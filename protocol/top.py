"""`capflow top`: a live terminal view of a running server.

Each refresh reads `system.metrics`, `system.health`, the first profiles of
`profile.list` and `profile.get` of each of them. Two readings make one frame: requests
per second, errors per second and latency percentiles per op over the time between
them (the server's histograms are cumulative, so the difference of two readings is the
histogram of that window), then the profiles with their ledgers, open positions and
tripped breakers.

Gathering (`read`) and drawing (`render`, a pure function of two readings) are
separate, so the view can be tested without a terminal.

The server counts the view's own requests like any other; the view knows what it sent
for each reading (`Reading.sent`) and takes that out of the next window, so an idle
server shows 0 requests/s. (Latency percentiles of an op that others request too still
include the view's own requests of it.) Before the first reading the command checks
that a server answers (capflow.protocol.probe) and says so at once when none does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from capflow.protocol.client import Client, ClientError, ClientTimeout, CurveKeys
from capflow.protocol.metrics import BUCKET_BASE_US, BUCKET_FACTOR, percentile_ms
from capflow.protocol.probe import NoServer, probe

#: the ledger columns of the profiles table: (title, ledger field)
LEDGER_COLUMNS = (("allocated", "allocated"), ("available", "available"), ("held", "held"),
                  ("rsv orders", "reserved_for_orders"),
                  ("rsv positions", "reserved_for_positions"),
                  ("realized PnL", "realized_pnl"), ("fees", "fees"))
_sleep = time.sleep  # between refreshes (a test replaces it)


@dataclass
class Reading:
    """What one refresh saw. `error` set: the server did not answer (nothing else is)."""

    at: float  # time.monotonic() here, when the reading was complete
    metrics: dict[str, Any] | None = None
    health: dict[str, Any] | None = None
    profiles: list[dict[str, Any]] = field(default_factory=list)
    #: ops that answered with an error, e.g. {"system.metrics": "UNKNOWN_OP"}
    failed: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    #: the requests this reading sent, per op, and their error answers per (op, code):
    #: the server counts them in the next reading's metrics, which take them out
    sent: Counter = field(default_factory=Counter)
    sent_errors: Counter = field(default_factory=Counter)


# -- gathering ----------------------------------------------------------------------------

def read(client: Client, max_profiles: int) -> Reading:
    """One reading. Raises `ClientTimeout` when the server does not answer; an op that
    answers with an error is noted in `failed` and the rest is read anyway."""
    failed: dict[str, str] = {}
    sent: Counter = Counter()
    sent_errors: Counter = Counter()

    def ask(op: str, fn, *a, **kw):
        sent[op] += 1
        try:
            return fn(*a, **kw)
        except ClientTimeout:
            raise
        except ClientError as exc:
            failed[op] = exc.code
            sent_errors[op, exc.code] += 1
            return None

    metrics = ask("system.metrics", client.system_metrics)
    health = ask("system.health", client.health)
    listed: list[dict[str, Any]] = []
    cursor = None
    while len(listed) < max_profiles:
        page = ask("profile.list", client.profile_list,
                   limit=min(1000, max_profiles - len(listed)), cursor=cursor)
        if page is None:
            break
        listed += page["profiles"]
        cursor = page.get("next_cursor")
        if not cursor or not page["profiles"]:
            break
    profiles = []
    for entry in listed[:max_profiles]:
        full = ask("profile.get", client.profile_get, entry["profile_id"])
        profiles.append(full if full is not None else entry)  # the list has no risk map
    return Reading(time.monotonic(), metrics, health, profiles, failed, sent=sent,
                   sent_errors=sent_errors)


def try_read(client: Client, max_profiles: int, endpoint: str) -> Reading:
    try:
        return read(client, max_profiles)
    except ClientTimeout:
        return Reading(time.monotonic(), error=f"no answer from {endpoint}")


# -- the arithmetic -----------------------------------------------------------------------

def hist_delta(new: dict[str, int], old: dict[str, int] | None) -> dict[str, int]:
    """The histogram of the requests between two cumulative readings."""
    if not old:
        return {k: n for k, n in new.items() if n > 0}
    out = {}
    for k, n in new.items():
        d = n - old.get(k, 0)
        if d > 0:
            out[k] = d
    return out


def window_percentile(new: dict[str, int], old: dict[str, int] | None, q: float, *,
                      base_us: float = BUCKET_BASE_US, factor: float = BUCKET_FACTOR,
                      cap_ms: float | None = None) -> float | None:
    """The `q` quantile in ms of the requests between two cumulative histograms (`old`
    None: since the start); None when there were none."""
    return percentile_ms(hist_delta(new, old), q, base_us=base_us, factor=factor,
                         cap_ms=cap_ms)


def _comparable(prev: Reading | None, cur: Reading) -> bool:
    """Whether `prev` can be subtracted from `cur` (same server run, both with metrics)."""
    if prev is None or prev.metrics is None or cur.metrics is None:
        return False
    return (cur.metrics.get("uptime_s", 0) > prev.metrics.get("uptime_s", 0)
            and cur.metrics.get("requests", 0) >= prev.metrics.get("requests", 0))


def _own_errors(prev: Reading | None, op: str) -> int:
    return sum(n for (o, _), n in prev.sent_errors.items() if o == op) if prev else 0


def op_rows(prev: Reading | None, cur: Reading) -> tuple[float, list[dict[str, Any]]]:
    """(the window in seconds, one row per op): req/s, errors/s, p50/p99 ms over the
    window (since the start when there is no earlier reading to subtract), total. Over a
    window, the requests of `prev` itself are not counted (the server recorded them
    after `prev` read its metrics); an op that only the view asked for has no
    percentiles."""
    m = cur.metrics or {}
    windowed = _comparable(prev, cur)
    own = prev.sent if windowed else Counter()
    old_ops = prev.metrics.get("ops", {}) if windowed else {}
    span = (m["uptime_s"] - prev.metrics["uptime_s"]) if windowed else m.get("uptime_s", 0)
    span = max(span, 1e-9)
    base, factor = m.get("bucket_base_us", BUCKET_BASE_US), m.get("bucket_factor",
                                                                   BUCKET_FACTOR)
    rows = []
    for op, s in sorted(m.get("ops", {}).items()):
        o = old_ops.get(op, {})
        old_hist = o.get("histogram", {}) if windowed else None
        errors = sum(s.get("errors", {}).values()) - sum(o.get("errors", {}).values())
        errors = max(0, errors - (_own_errors(prev, op) if windowed else 0))
        count = max(0, s["count"] - o.get("count", 0) - own[op])
        cap = s.get("max_ms")
        p50 = p99 = None
        if count or not windowed:
            p50 = window_percentile(s.get("histogram", {}), old_hist, 0.50,
                                    base_us=base, factor=factor, cap_ms=cap)
            p99 = window_percentile(s.get("histogram", {}), old_hist, 0.99,
                                    base_us=base, factor=factor, cap_ms=cap)
        rows.append({
            "op": op, "rate": count / span, "errors": errors, "error_rate": errors / span,
            "p50_ms": p50, "p99_ms": p99, "total": s["count"],
            "codes": dict(s.get("errors", {}))})
    return (span if windowed else 0.0), rows


def tripped(profile: dict[str, Any]) -> list[str]:
    """The kinds of the profile's tripped breakers (daily, weekly, monthly, max)."""
    breakers = (profile.get("risk") or {}).get("breakers") or {}
    return [kind for kind, b in breakers.items() if isinstance(b, dict) and b.get("tripped")]


# -- drawing ------------------------------------------------------------------------------

def _uptime(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    text = f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{days}d {text}" if days else text


def _rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}" if x < 100 else f"{x:,.0f}"


def _header(prev: Reading | None, cur: Reading, endpoint: str) -> Text:
    text = Text()
    text.append("capflow top ", style="bold")
    text.append(endpoint)
    if cur.error is not None:
        text.append("   no answer", style="bold red")
        text.append(f" (at {time.strftime('%H:%M:%S')}; trying again)")
        return text
    h, m = cur.health or {}, cur.metrics or {}
    uptime = m.get("uptime_s", h.get("uptime_s"))
    state = h.get("trading_state", "?")
    text.append(f"   up {_uptime(uptime) if uptime is not None else '?'}")
    text.append(f"   v{h.get('version', '?')}")
    text.append("   trading ")
    text.append(state, style="bold green" if state == "ACTIVE" else "bold red")
    if m:
        if _comparable(prev, cur):
            span = max(m["uptime_s"] - prev.metrics["uptime_s"], 1e-9)
            others = m["requests"] - prev.metrics["requests"] - sum(prev.sent.values())
            total = max(0, others) / span
        else:
            total = m.get("requests", 0) / max(m.get("uptime_s", 0), 1e-9)
        text.append(f"   {_rate(total)} req/s", style="bold")
        text.append(f"   in flight {m.get('in_flight', 0)}")
        if m.get("refused"):
            text.append(f"   refused {m['refused']:,}")
    text.append(f"\nstorage {h.get('storage') or '-'}   environment {h.get('environment', '?')}"
                f"   security {h.get('security', '?')}   status {h.get('status', '?')}",
                style="dim")
    for op, code in sorted(cur.failed.items()):
        text.append(f"\n{op}: {code}", style="yellow")
    return text


def _ops_table(prev: Reading | None, cur: Reading) -> Table:
    span, rows = op_rows(prev, cur)
    title = (f"requests, last {span:.1f} s (not counting this view's own "
             f"{sum(prev.sent.values())})" if span else "requests, since the start")
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("op", no_wrap=True)
    for name in ("req/s", "err/s", "p50 ms", "p99 ms", "total"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("errors since start")
    for r in rows:
        codes = ", ".join(f"{c} {n:,}" for c, n in sorted(r["codes"].items()))
        table.add_row(Text(r["op"]), _rate(r["rate"]),
                      Text(_rate(r["error_rate"]), style="red" if r["errors"] else ""),
                      _ms(r["p50_ms"]), _ms(r["p99_ms"]), f"{r['total']:,}", Text(codes))
    if not rows:
        table.add_row(Text("(no requests yet)"), "", "", "", "", "", "")
    return table


def _profiles_table(cur: Reading) -> Table:
    total = (cur.health or {}).get("profiles")
    shown = len(cur.profiles)
    title = f"profiles ({shown} of {total})" if total is not None else f"profiles ({shown})"
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("profile", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for name, _ in LEDGER_COLUMNS:
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("open pos", justify="right", no_wrap=True)
    table.add_column("breakers tripped")
    for p in cur.profiles:
        ledger = p.get("ledger") or {}
        risk = p.get("risk")
        state = p.get("state", "?")
        trips = tripped(p)
        table.add_row(
            Text(p.get("profile_id", "?")),
            Text(state, style="" if state == "ACTIVE" else "bold red"),
            *(Text(str(ledger.get(f, "-"))) for _, f in LEDGER_COLUMNS),
            str(risk.get("open_positions", "-")) if risk else "-",
            Text(", ".join(trips) or "-", style="bold red" if trips else ""))
    return table


def render(prev: Reading | None, cur: Reading, endpoint: str) -> RenderableType:
    """One frame from two readings (`prev` None or unusable: figures since the start)."""
    header = _header(prev, cur, endpoint)
    if cur.error is not None:
        return Group(header)
    parts: list[RenderableType] = [header]
    if cur.metrics is not None:
        parts.append(_ops_table(prev, cur))
    parts.append(_profiles_table(cur))
    open_positions = sum(int((p.get("risk") or {}).get("open_positions") or 0)
                         for p in cur.profiles)
    trips = sum(len(tripped(p)) for p in cur.profiles)
    parts.append(Text(f"open positions {open_positions}   breakers tripped {trips}",
                      style="bold red" if trips else "bold"))
    return Group(*parts)


# -- the command --------------------------------------------------------------------------

def _console(out: TextIO) -> Console:
    console = Console(file=out)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # a file or a pipe: wide enough for the profiles table
    return console


def command(cfg, args: argparse.Namespace, *, curve: CurveKeys | None,
            out: TextIO) -> int:
    """`capflow top`: 0 after --once or Ctrl-C; 1 when --once gets no answer."""
    endpoint = args.endpoint or cfg.server.endpoint
    interval = max(0.05, float(args.interval))
    limit = max(0, int(args.profiles))
    try:
        probe(endpoint, curve)
    except NoServer as exc:
        print(f"capflow: {exc}", file=sys.stderr)
        return 1
    client = Client(endpoint, timeout_s=args.timeout, retries=0, curve=curve)
    console = _console(out)
    try:
        if args.once:
            readings = [try_read(client, limit, endpoint)]
            if readings[0].error is None:
                _sleep(interval)
                readings.append(try_read(client, limit, endpoint))
            if readings[-1].error is not None:
                print(f"capflow: no answer from {endpoint}", file=sys.stderr)
                return 1
            console.print(render(*readings, endpoint))
            return 0
        return _live(client, console, endpoint, interval, limit)
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()


def _live(client: Client, console: Console, endpoint: str, interval: float,
          limit: int) -> int:
    prev: Reading | None = None
    with Live(console=console, auto_refresh=False, redirect_stdout=False,
              redirect_stderr=False) as live:
        while True:
            began = time.monotonic()
            cur = try_read(client, limit, endpoint)
            live.update(render(prev, cur, endpoint), refresh=True)
            if cur.error is None:
                prev = cur
            _sleep(max(0.0, interval - (time.monotonic() - began)))
