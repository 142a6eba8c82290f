"""The report of a stress run: figures from the raw records, then files in a run directory.

    summary = summarize(requests, duration_s, faults=faults)
    paths = write_report(run_dir, meta=..., requests=..., kills=..., faults=...,
                         audit=..., duration_s=...)

Inputs (all in run seconds, i.e. seconds since the run started):
  requests  tuples ``(t, op, ms, code)``: when the request was sent, its operation, its
            latency in milliseconds and "ok", an error code, or "NO_ANSWER" when the
            client gave up waiting;
  kills     dicts ``{"t": moment of the SIGKILL, "down_s": until the restarted server
            answered}`` (``down_s`` may be None: the server never answered again);
  faults    dicts ``{"kind": "stall" | "storage", "start", "end"}`` (an ``end`` of None
            means the window lasted to the end of the load phase).

How the figures are counted:
  * every request counts in ``requests``, ``errors``, ``per_s`` and the series; every
    code other than "ok" is an error, "NO_ANSWER" included;
  * latency figures (percentiles, max, mean) cover the *answered* requests of an op:
    "ok" and error answers alike (a TIMEOUT or CONFLICT is a reply the client waited
    for), but not "NO_ANSWER", whose ``ms`` only says how long the client waited before
    giving up. They are None when an op has no answered request;
  * percentiles are nearest-rank: with the n answered latencies sorted ascending, pX is
    the value at rank ceil(X / 100 * n) (1-based), always a measured latency, never an
    interpolation;
  * rates divide by ``duration_s`` (the load phase); they are 0.0 when it is not > 0;
  * the series has one bucket per ``bucket_s`` from 0 and covers the load phase and
    every request (a request sent after ``duration_s`` extends it; negative times count
    in the first bucket). A bucket holds counts, not rates: divide by ``bucket_s``;
  * ``during_faults`` counts the requests *sent* in [start, end] (both ends included)
    of each fault window, by code, in the order of ``faults``, and shows the harness's
    own witness request of the window (``witness``: a request that must meet the fault,
    with capflow's answer code).

`write_report` writes report.json, summary.md, throughput.png, latency.png and
percentiles.png. Charts are drawn on a bare `matplotlib.figure.Figure` with the Agg
canvas (no pyplot, no global state). Standard library and matplotlib only.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

NO_ANSWER = "NO_ANSWER"
OK = "ok"
MAX_VIOLATIONS_MD = 50  # violations listed in summary.md; the JSON holds all of them
FILES = {"json": "report.json", "markdown": "summary.md", "throughput": "throughput.png",
         "latency": "latency.png", "percentiles": "percentiles.png"}
FAULT_COLOURS = {"stall": "tab:orange", "storage": "tab:purple"}
_OTHER_FAULT_COLOUR = "tab:gray"
_SIZE = (11.0, 6.0)
_DPI = 100
_ECDF_POINTS = 2000  # at most this many points per op on the latency chart
_MIN_LOG_MS = 1e-3  # latencies <= 0 are drawn at this value on log axes


# -- the figures ---------------------------------------------------------------------------

def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile `p` (0..100) of ascending `sorted_values`; None if empty."""
    n = len(sorted_values)
    if n == 0:
        return None
    rank = max(1, math.ceil(p / 100.0 * n))
    return sorted_values[min(rank, n) - 1]


class _Grouped:
    """One pass over the requests: everything the summary and the charts need."""

    def __init__(self, requests: Iterable[Sequence[Any]]) -> None:
        self.count = 0
        self.codes: dict[str, int] = {}
        self.op_codes: dict[str, dict[str, int]] = {}
        self.op_latencies: dict[str, list[float]] = {}  # answered only, sorted at the end
        self.times: list[float] = []
        self.rows: list[tuple[float, str, str]] = []  # (t, op, code)
        for t, op, ms, code in requests:
            t = float(t)
            op = str(op)
            code = str(code)
            self.count += 1
            self.codes[code] = self.codes.get(code, 0) + 1
            codes = self.op_codes.get(op)
            if codes is None:
                codes = self.op_codes[op] = {}
                self.op_latencies[op] = []
            codes[code] = codes.get(code, 0) + 1
            if code != NO_ANSWER:
                self.op_latencies[op].append(float(ms))
            self.rows.append((t, op, code))
        for lat in self.op_latencies.values():
            lat.sort()

    @property
    def ops(self) -> list[str]:
        return sorted(self.op_codes)


def _errors(codes: dict[str, int]) -> dict[str, int]:
    return {c: n for c, n in sorted(codes.items()) if c != OK}


def _rate(n: int, duration_s: float) -> float:
    return round(n / duration_s, 3) if duration_s > 0 else 0.0


def _fault_window(fault: dict, duration_s: float) -> tuple[str, float, float]:
    start = float(fault.get("start") or 0.0)
    end = fault.get("end")
    end = max(float(duration_s), start) if end is None else float(end)
    return str(fault.get("kind", "?")), start, end


def _series(g: _Grouped, duration_s: float, bucket_s: float) -> dict:
    last_t = max((t for t, _, _ in g.rows), default=0.0)
    n = max(math.ceil(duration_s / bucket_s) if duration_s > 0 else 0,
            int(last_t // bucket_s) + 1 if g.rows else 0)
    total = [0] * n
    ok = [0] * n
    per_op = {op: [0] * n for op in g.ops}
    for t, op, code in g.rows:
        i = int(t // bucket_s) if t > 0 else 0
        total[i] += 1
        per_op[op][i] += 1
        if code == OK:
            ok[i] += 1
    return {"bucket_s": bucket_s, "t": [round(i * bucket_s, 6) for i in range(n)],
            "total": total, "ok": ok, "per_op": per_op}


def _during_faults(g: _Grouped, faults: Iterable[dict], duration_s: float) -> list[dict]:
    faults = list(faults)
    if not faults:
        return []
    rows = sorted(g.rows, key=lambda r: r[0])
    times = [r[0] for r in rows]
    out = []
    for fault in faults:
        kind, start, end = _fault_window(fault, duration_s)
        codes: dict[str, int] = {}
        lo, hi = bisect_left(times, start), bisect_right(times, end)
        for _, _, code in rows[lo:hi]:
            codes[code] = codes.get(code, 0) + 1
        window = {"kind": kind, "start": start, "end": end, "requests": max(0, hi - lo),
                  "codes": dict(sorted(codes.items()))}
        if "witness" in fault:
            window["witness"] = fault["witness"]
        out.append(window)
    return out


def _summarize(g: _Grouped, duration_s: float, bucket_s: float, faults) -> dict:
    if bucket_s <= 0:
        raise ValueError(f"bucket_s must be > 0, not {bucket_s!r}")
    duration_s = float(duration_s)
    per_op = {}
    for op in g.ops:
        codes = g.op_codes[op]
        lat = g.op_latencies[op]
        count = sum(codes.values())
        per_op[op] = {
            "count": count,
            "ok": codes.get(OK, 0),
            "answered": len(lat),
            "errors": _errors(codes),
            "per_s": _rate(count, duration_s),
            "p50_ms": percentile(lat, 50),
            "p90_ms": percentile(lat, 90),
            "p99_ms": percentile(lat, 99),
            "max_ms": lat[-1] if lat else None,
            "mean_ms": round(math.fsum(lat) / len(lat), 3) if lat else None,
        }
    ok = g.codes.get(OK, 0)
    return {
        "requests": g.count,
        "ok": ok,
        "errors": _errors(g.codes),
        "throughput_per_s": _rate(g.count, duration_s),
        "ok_per_s": _rate(ok, duration_s),
        "per_op": per_op,
        "series": _series(g, duration_s, float(bucket_s)),
        "during_faults": _during_faults(g, faults, duration_s),
    }


def summarize(requests, duration_s: float, *, bucket_s: float = 1.0, faults=()) -> dict:
    """The figures of a run as a JSON-ready dict (see the module docstring for the rules).

    Keys: requests, ok, errors {code: n}, throughput_per_s, ok_per_s, per_op {op: count,
    ok, answered, errors, per_s, p50_ms, p90_ms, p99_ms, max_ms, mean_ms}, series
    {bucket_s, t, total, ok, per_op {op: [...]}} and during_faults [{kind, start, end,
    requests, codes}]. Ops and codes are sorted by name.
    """
    return _summarize(_Grouped(requests), duration_s, bucket_s, faults)


# -- the charts ----------------------------------------------------------------------------

def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes,
            fontsize=14, color="gray")


def _throughput_png(path: Path, summary: dict, kills, faults, duration_s: float) -> Path:
    fig = _figure()
    ax = fig.add_subplot()
    series = summary["series"]
    bucket_s = series["bucket_s"]
    x_end = max(float(duration_s), len(series["t"]) * bucket_s)
    if series["t"]:
        xs = [*series["t"], len(series["t"]) * bucket_s]
        total = [n / bucket_s for n in series["total"]]
        ok = [n / bucket_s for n in series["ok"]]
        ax.step(xs, [*total, total[-1]], where="post", color="tab:blue", linewidth=1.2,
                label="all requests")
        ax.step(xs, [*ok, ok[-1]], where="post", color="tab:green", linewidth=1.2,
                label="answered ok")
    if not summary["requests"]:
        _no_data(ax, "no requests")
    labelled: set[str] = set()
    for fault in faults:
        kind, start, end = _fault_window(fault, duration_s)
        label = f"{kind} fault"
        ax.axvspan(start, end, color=FAULT_COLOURS.get(kind, _OTHER_FAULT_COLOUR), alpha=0.18,
                   label=None if label in labelled else label)
        labelled.add(label)
        x_end = max(x_end, end)
    for kill in kills:
        t = float(kill.get("t") or 0.0)
        down = kill.get("down_s")
        if down is not None and float(down) > 0:
            ax.axvspan(t, t + float(down), color="tab:red", alpha=0.08,
                       label=None if "down" in labelled else "server down")
            labelled.add("down")
            x_end = max(x_end, t + float(down))
        ax.axvline(t, color="tab:red", linestyle="--", linewidth=1.2,
                   label=None if "kill" in labelled else "kill")
        labelled.add("kill")
        x_end = max(x_end, t)
    ax.set_xlim(0.0, x_end if x_end > 0 else 1.0)
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("run time (s)")
    ax.set_ylabel(f"requests/s ({bucket_s:g} s buckets)")
    ax.set_title(f"throughput: {summary['requests']:,} requests, {summary['ok']:,} ok, "
                 f"{len(list(kills))} kills, {len(list(faults))} fault windows")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=6, frameon=False)
    fig.savefig(path, format="png")
    return path


def _ecdf(lat: list[float]) -> tuple[list[float], list[float]]:
    """(x, y) of the ECDF of ascending `lat`, at most _ECDF_POINTS points."""
    n = len(lat)
    if n <= _ECDF_POINTS:
        idx = range(n)
    else:
        idx = sorted({round(k * (n - 1) / (_ECDF_POINTS - 1)) for k in range(_ECDF_POINTS)})
    return ([max(lat[i], _MIN_LOG_MS) for i in idx], [(i + 1) / n for i in idx])


def _latency_png(path: Path, g: _Grouped) -> Path:
    fig = _figure()
    ax = fig.add_subplot()
    drawn = 0
    for op in g.ops:
        lat = g.op_latencies[op]
        if not lat:
            continue
        xs, ys = _ecdf(lat)
        ax.step(xs, ys, where="post", linewidth=1.3, label=f"{op} (n={len(lat):,})")
        drawn += 1
    ax.set_title("latency per op (ECDF of answered requests, NO_ANSWER excluded)")
    ax.set_ylabel("fraction of answers at or below")
    ax.set_xlabel("latency (ms)")
    if drawn:
        ax.set_xscale("log")
        for q in (0.5, 0.99):
            ax.axhline(q, color="gray", linestyle=":", linewidth=0.8)
        ax.set_ylim(0.0, 1.02)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(loc="lower right", fontsize="small")
    else:
        _no_data(ax, "no answered requests")
    fig.savefig(path, format="png")
    return path


def _percentiles_png(path: Path, summary: dict) -> Path:
    fig = _figure()
    ax = fig.add_subplot()
    ops = [op for op, s in summary["per_op"].items() if s["p50_ms"] is not None]
    ax.set_title("p50 and p99 latency per op (answered requests, nearest rank)")
    if not ops:
        _no_data(ax, "no answered requests")
        fig.savefig(path, format="png")
        return path
    p50 = [max(summary["per_op"][op]["p50_ms"], _MIN_LOG_MS) for op in ops]
    p99 = [max(summary["per_op"][op]["p99_ms"], _MIN_LOG_MS) for op in ops]
    log = max(p99) / min(p50) > 20.0
    h = 0.38
    ys = list(range(len(ops)))
    b50 = ax.barh([y - h / 2 for y in ys], p50, height=h, color="tab:blue", label="p50")
    b99 = ax.barh([y + h / 2 for y in ys], p99, height=h, color="tab:red", label="p99")
    ax.bar_label(b50, labels=[_fmt_ms(v) for v in p50], padding=3, fontsize="small")
    ax.bar_label(b99, labels=[_fmt_ms(v) for v in p99], padding=3, fontsize="small")
    ax.set_yticks(ys, labels=ops)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
        ax.set_xlim(min(p50) / 2, max(p99) * 4)
    else:
        ax.set_xlim(0.0, max(p99) * 1.2)
    ax.set_xlabel("latency (ms)" + (", log scale" if log else ""))
    ax.grid(True, axis="x", which="both", alpha=0.25)
    ax.legend(loc="lower right")
    fig.savefig(path, format="png")
    return path


# -- the Markdown --------------------------------------------------------------------------

def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.1f}"


def _fmt_s(v: Any) -> str:
    return "-" if v is None else f"{float(v):,.2f}"


def _cell(v: Any) -> str:
    """A value as one Markdown table cell (no newlines, pipes escaped)."""
    if isinstance(v, dict | list | tuple | bool) or v is None:
        v = json.dumps(v, default=str, sort_keys=True)
    else:
        v = str(v)
    return " ".join(v.split()).replace("|", "\\|") or " "


def _codes(codes: dict[str, int]) -> str:
    return ", ".join(f"{c} {n:,}" for c, n in codes.items()) or "-"


def _markdown(doc: dict, chart_names: list[str]) -> str:
    meta, s, audit = doc["meta"], doc["summary"], doc["audit"]
    kills, faults = doc["kills"], s["during_faults"]
    lines = ["# capflow stress run", ""]

    ok = bool(audit.get("ok"))
    violations = [str(v) for v in audit.get("violations") or []]
    lines += [f"## Audit: **{'PASS' if ok else 'FAIL'}**", ""]
    if ok and not violations:
        lines.append("The audit (storage, wire, and each crash point) found no violation.")
    else:
        total = int(audit.get("violation_count") or len(violations))
        lines.append(f"{total:,} violation(s):")
        lines.append("")
        for v in violations[:MAX_VIOLATIONS_MD]:
            lines.append(f"- {' '.join(v.split())}")
        if total > MAX_VIOLATIONS_MD:
            lines.append(f"- ... and {total - MAX_VIOLATIONS_MD:,} more (report.json "
                         "lists the first 200)")
    checked = audit.get("checked") or {}
    if checked:
        lines += ["", "| checked | count |", "|---|---:|"]
        lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in checked.items()]
    lines.append("")

    lines += ["## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in meta.items()]
    lines.append("")

    lines += ["## Totals", "",
              f"- requests: {s['requests']:,} ({s['throughput_per_s']:,.1f}/s over "
              f"{doc['duration_s']:g} s)",
              f"- ok: {s['ok']:,} ({s['ok_per_s']:,.1f}/s)",
              f"- errors: {_codes(s['errors'])}", ""]

    lines += ["## Per op", "",
              "Latencies over answered requests (errors included, NO_ANSWER excluded), "
              "nearest-rank percentiles.", ""]
    if s["per_op"]:
        lines += ["| op | count | ok | errors | req/s | p50 ms | p99 ms | max ms |",
                  "|---|---:|---:|---|---:|---:|---:|---:|"]
        for op, o in s["per_op"].items():
            lines.append(f"| {_cell(op)} | {o['count']:,} | {o['ok']:,} | "
                         f"{_cell(_codes(o['errors']))} | {o['per_s']:,.1f} | "
                         f"{_fmt_ms(o['p50_ms'])} | {_fmt_ms(o['p99_ms'])} | "
                         f"{_fmt_ms(o['max_ms'])} |")
    else:
        lines.append("No requests.")
    lines.append("")

    lines += ["## Kills", "", f"{len(kills)} kill(s)."]
    if kills:
        lines += ["", "| # | SIGKILL at (s) | down (s) |", "|---:|---:|---:|"]
        for i, k in enumerate(kills, 1):
            down = k.get("down_s")
            lines.append(f"| {i} | {_fmt_s(k.get('t'))} | "
                         f"{'never answered again' if down is None else _fmt_s(down)} |")
    lines.append("")

    lines += ["## Fault windows", "", f"{len(faults)} fault window(s)."]
    if faults:
        lines += ["", "| kind | start (s) | end (s) | requests sent | codes |",
                  "|---|---:|---:|---:|---|"]
        for f in faults:
            lines.append(f"| {_cell(f['kind'])} | {_fmt_s(f['start'])} | {_fmt_s(f['end'])} "
                         f"| {f['requests']:,} | {_cell(_codes(f['codes']))} |")
    lines.append("")

    lines += ["## Charts", ""]
    lines += [f"- [{name}]({name})" for name in chart_names]
    lines.append("")
    for name in chart_names:
        lines += [f"![{name}]({name})", ""]
    return "\n".join(lines)


# -- the files -----------------------------------------------------------------------------

def write_report(run_dir, *, meta: dict, requests, kills, faults, audit: dict,
                 duration_s: float, extra: dict | None = None) -> dict:
    """Write report.json, summary.md and the three charts into `run_dir` (created).

    report.json is ``{"meta", "summary", "kills", "faults", "audit", **extra}``; values
    JSON cannot hold (Decimal, Path, datetime, ...) are written as their str(). A key of
    `extra` that names one of those five raises ValueError instead of replacing it.
    Returns ``{"json": Path, "markdown": Path, "charts": [throughput, latency,
    percentiles]}``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    kills = list(kills)
    faults = list(faults)
    extra = dict(extra or {})
    base = ("meta", "summary", "kills", "faults", "audit")
    clash = sorted(set(extra) & set(base))
    if clash:
        raise ValueError(f"extra may not replace {clash}")

    g = _Grouped(requests)
    summary = _summarize(g, duration_s, 1.0, faults)
    doc = {"meta": dict(meta), "summary": summary, "kills": kills, "faults": faults,
           "audit": audit, **extra}

    json_path = run_dir / FILES["json"]
    json_path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")

    charts = [
        _throughput_png(run_dir / FILES["throughput"], summary, kills, faults, duration_s),
        _latency_png(run_dir / FILES["latency"], g),
        _percentiles_png(run_dir / FILES["percentiles"], summary),
    ]
    md_path = run_dir / FILES["markdown"]
    md_doc = {**doc, "duration_s": float(duration_s)}
    md_path.write_text(_markdown(md_doc, [p.name for p in charts]), encoding="utf-8")
    return {"json": json_path, "markdown": md_path, "charts": charts}
