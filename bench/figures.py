"""How the suite (bench/suite.py) reads each script's --json document: its figures, each
beside the baseline the script measured in the same run, their aims, and the problems a
script reported."""

from __future__ import annotations

from collections.abc import Mapping


def _ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return value / baseline


def _aim(of: str, op: str, target: float, actual: float | None) -> dict:
    """One condition a script states: `of` (ratio, value or p99_ms) `op` target."""
    met = None
    if actual is not None:
        met = actual >= target if op == ">=" else actual < target
    return {"of": of, "op": op, "target": target, "actual": actual, "met": met}


def _figure(label: str, value: float, unit: str, baseline: str, baseline_value: float,
            baseline_unit: str, aim: list[dict] | None = None,
            extra: dict | None = None) -> dict:
    return {"label": label, "value": value, "unit": unit, "baseline": baseline,
            "baseline_value": baseline_value, "baseline_unit": baseline_unit,
            "ratio": _ratio(value, baseline_value), "aim": aim or None,
            "extra": extra or {}}


#: ledger.py states its aims in its docstring: (a)/(c) >= 0.5 and (b) >= 10,000 pairs/s
LEDGER_AIM_A_OVER_C = 0.5
LEDGER_AIM_B_PAIRS_S = 10_000.0


def ledger_figures(doc: Mapping) -> dict[str, dict]:
    """ledger.py: {"runs": {a, b, c: [...]}, "median": {a, b, c}, "a_over_c"}."""
    med = doc["median"]
    a, b, c = float(med["a"]), float(med["b"]), float(med["c"])
    base = "(c) bare thread + queue"
    rounds = len(doc.get("runs", {}).get("c", []))
    return {
        "a": _figure("(a) pairs, actors, storage off", a, "pairs/s", base, c, "pairs/s",
                     [_aim("ratio", ">=", LEDGER_AIM_A_OVER_C, _ratio(a, c))],
                     {"rounds": rounds}),
        "b": _figure("(b) pairs, actors, durable", b, "pairs/s", base, c, "pairs/s",
                     [_aim("value", ">=", LEDGER_AIM_B_PAIRS_S, b)], {"rounds": rounds}),
    }


#: wire.py: the op paths, their labels and units here, and the names of their aims
WIRE_OPS = (("ledger.get", "ledger.get requests", "requests/s", "ledger_get_over_echo"),
            ("reserve", "reserve+release requests, durable", "requests/s",
             "reserve_over_echo"),
            ("quote", "allocation.quote, answered ok", "quotes/s", "quote_over_echo"))
#: wire.py applies its p99 aim to these two paths
WIRE_P99_AIMED = ("ledger.get", "reserve")


def wire_figures(doc: Mapping) -> dict[str, dict]:
    """wire.py: {"clients": [1, 8], "median": {"<path>@<n>": {rps, pairs_s, p50_ms,
    p99_ms}}, "failed": {"<path>@<n>": count}, "ratios": {"clients": top, ...},
    "aims": {"ledger_get_over_echo", "reserve_over_echo", "quote_over_echo", "p99_ms"}};
    its aims hold at the largest client count only."""
    med, aims, failed = doc["median"], doc.get("aims", {}), doc.get("failed", {})
    counts = list(doc["clients"])
    top = doc.get("ratios", {}).get("clients", max(counts))
    out: dict[str, dict] = {}
    for n in counts:
        echo = med[f"echo@{n}"]
        clients = f"{n} client{'s' if n != 1 else ''}"
        for kind, label, unit, aim_key in WIRE_OPS:
            f = med[f"{kind}@{n}"]
            value = float(f["rps"])
            aim: list[dict] = []
            if n == top:
                if aim_key in aims:
                    aim.append(_aim("ratio", ">=", float(aims[aim_key]),
                                    _ratio(value, float(echo["rps"]))))
                if kind in WIRE_P99_AIMED and "p99_ms" in aims:
                    aim.append(_aim("p99_ms", "<", float(aims["p99_ms"]), f["p99_ms"]))
            extra = {"clients": n, "p50_ms": f["p50_ms"], "p99_ms": f["p99_ms"],
                     "failed": failed.get(f"{kind}@{n}", 0),
                     "baseline_p50_ms": echo["p50_ms"], "baseline_p99_ms": echo["p99_ms"]}
            if f.get("pairs_s") is not None:
                extra["pairs_s"] = f["pairs_s"]
            out[f"{kind}@{n}"] = _figure(f"{label}, {clients}", value, unit,
                                         f"echo (bare ROUTER), {clients}",
                                         float(echo["rps"]), "requests/s", aim, extra)
    return out


def wire_problems(doc: Mapping) -> list[str]:
    return [f"{key}: {n} failed requests" for key, n in doc.get("failed", {}).items() if n]


#: oms.py: its figures, their labels and units
OMS_FIGURES = {"orders": ("(1) market orders opened + filled", "orders/s"),
               "round_trips": ("(2) round trips, closed by tp / sl", "round trips/s")}


def oms_figures(doc: Mapping) -> dict[str, dict]:
    """oms.py: {"args", "baseline_runs", "baseline", "reference": {rate, text},
    "figures": {"orders" / "round_trips": {rate, count, elapsed_s, fills_per_s,
    over_baseline, problems, ...}}, "ok"}; no aim (the reference is a comparison)."""
    b = float(doc["baseline"])
    ref = doc.get("reference") or {}
    out: dict[str, dict] = {}
    for kind, f in doc["figures"].items():
        label, unit = OMS_FIGURES.get(kind, (kind, "per s"))
        value = float(f["rate"])
        extra = {k: f[k] for k in ("count", "elapsed_s", "fills_per_s", "submitted",
                                   "stayed_open") if k in f}
        extra["baseline_runs"] = doc.get("baseline_runs", [])
        if kind == "orders" and ref.get("rate"):
            extra["reference"] = {"text": ref.get("text", ""), "value": ref["rate"],
                                  "ratio": value / float(ref["rate"])}
        out[kind] = _figure(label, value, unit, "bare thread + SimpleQueue", b,
                            "messages/s", None, extra)
    return out


def oms_problems(doc: Mapping) -> list[str]:
    if doc.get("ok", True):
        return []
    found = [f"{kind}: {p}" for kind, f in doc.get("figures", {}).items()
             for p in f.get("problems", [])]
    return found or ["the script's checks failed"]


def venue_figures(doc: Mapping) -> dict[str, dict]:
    """venue.py: {"signals": {signals, p50_ms, p99_ms, bare_p50_ms, bare_p99_ms, ...},
    "fills": {fills, booked_per_s, elapsed_s, bare_read_per_s, ...},
    "reconcile": {orders, elapsed_s, bare_s, ...} (absent in older runs)}; no aim yet."""
    sig, fills, recon = doc["signals"], doc["fills"], doc.get("reconcile")
    return {
        "signal_to_venue": _figure(
            "signal -> order at the venue, one at a time", 1000 / float(sig["p50_ms"]),
            "signals/s (1000 / p50)", "bare ccxt create_order",
            1000 / float(sig["bare_p50_ms"]), "orders/s (1000 / p50)", None,
            {k: sig[k] for k in ("signals", "p50_ms", "p99_ms", "bare_p50_ms",
                                 "bare_p99_ms")}),
        "fills_booked": _figure(
            "venue fills of one order, booked", float(fills["booked_per_s"]), "fills/s",
            "bare ccxt read of the trades", float(fills["bare_read_per_s"] or 0),
            "trades/s", None, {k: fills[k] for k in ("fills", "elapsed_s")}),
        **({} if recon is None else {"reconcile": _figure(
            f"account.reconcile, {int(recon['orders']):,} orders at the venue",
            float(recon["orders"]) / float(recon["elapsed_s"]), "orders/s",
            "bare ccxt reads of the same pages",
            float(recon["orders"]) / float(recon["bare_s"]), "orders/s", None,
            {k: recon[k] for k in ("orders", "elapsed_s", "bare_s")})}),
    }
