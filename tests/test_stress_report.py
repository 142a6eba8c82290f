"""bench/stress/report.py: exact figures from hand-made records, and the files it writes."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _load():
    # by file path: independent of bench/stress/__init__.py and of the rest of the package
    spec = importlib.util.spec_from_file_location(
        "stress_report", ROOT / "bench" / "stress" / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


report = _load()


# -- summarize -----------------------------------------------------------------------------

def _quotes():
    """100 quotes with latencies 1..100 ms: 90 ok, 5 TIMEOUT, 5 INSUFFICIENT_CAPITAL."""
    out = []
    for i in range(100):
        code = "ok" if i < 90 else ("TIMEOUT" if i < 95 else "INSUFFICIENT_CAPITAL")
        out.append((i * 0.1, "allocation.quote", float(100 - i), code))
    return out


def test_percentiles_are_nearest_rank_over_answered_requests():
    reqs = _quotes()
    # NO_ANSWER: counted, but its huge "latency" must stay out of every latency figure
    reqs.append((5.0, "allocation.quote", 30000.0, "NO_ANSWER"))
    reqs += [(0.5, "ledger.get", 2.0, "ok"), (1.5, "ledger.get", 4.0, "ok"),
             (2.5, "ledger.get", 9.0, "NOT_FOUND")]
    s = report.summarize(reqs, 10.0)

    q = s["per_op"]["allocation.quote"]
    assert q["count"] == 101 and q["ok"] == 90 and q["answered"] == 100
    assert q["errors"] == {"INSUFFICIENT_CAPITAL": 5, "NO_ANSWER": 1, "TIMEOUT": 5}
    assert q["p50_ms"] == 50.0 and q["p90_ms"] == 90.0 and q["p99_ms"] == 99.0
    assert q["max_ms"] == 100.0
    assert q["mean_ms"] == 50.5
    assert q["per_s"] == 10.1

    g = s["per_op"]["ledger.get"]
    # n = 3: p50 -> rank ceil(1.5) = 2, p99 -> rank ceil(2.97) = 3; the error answer counts
    assert g["p50_ms"] == 4.0 and g["p99_ms"] == 9.0 and g["max_ms"] == 9.0
    assert g["count"] == 3 and g["ok"] == 2 and g["errors"] == {"NOT_FOUND": 1}
    assert g["mean_ms"] == 5.0

    assert s["requests"] == 104 and s["ok"] == 92
    assert s["errors"] == {"INSUFFICIENT_CAPITAL": 5, "NOT_FOUND": 1, "NO_ANSWER": 1,
                           "TIMEOUT": 5}
    assert s["throughput_per_s"] == 10.4 and s["ok_per_s"] == 9.2
    assert list(s["per_op"]) == ["allocation.quote", "ledger.get"]
    json.dumps(s)  # JSON-ready as is


def test_percentile_edges():
    assert report.percentile([], 50) is None
    assert report.percentile([7.0], 50) == 7.0 and report.percentile([7.0], 99) == 7.0
    assert report.percentile([1.0, 2.0], 50) == 1.0
    assert report.percentile([1.0, 2.0], 51) == 2.0
    assert report.percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0
    assert report.percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0


def test_an_op_with_only_no_answer_has_no_latency_figures():
    s = report.summarize([(1.0, "position.close", 5000.0, "NO_ANSWER")], 2.0)
    c = s["per_op"]["position.close"]
    assert c["count"] == 1 and c["ok"] == 0 and c["answered"] == 0
    assert c["errors"] == {"NO_ANSWER": 1}
    assert c["p50_ms"] is None and c["p99_ms"] is None and c["max_ms"] is None
    assert c["mean_ms"] is None


def test_series_buckets():
    reqs = [(0.0, "a", 1.0, "ok"), (0.99, "a", 1.0, "TIMEOUT"), (1.0, "b", 1.0, "ok"),
            (1.5, "a", 1.0, "ok"), (3.2, "b", 1.0, "CONFLICT"), (-0.01, "b", 1.0, "ok")]
    series = report.summarize(reqs, 4.0)["series"]
    assert series["bucket_s"] == 1.0
    assert series["t"] == [0.0, 1.0, 2.0, 3.0]
    assert series["total"] == [3, 2, 0, 1]
    assert series["ok"] == [2, 2, 0, 0]
    assert series["per_op"] == {"a": [2, 1, 0, 0], "b": [1, 1, 0, 1]}

    # a request sent after the load phase extends the series; other bucket sizes
    series = report.summarize([*reqs, (5.1, "a", 1.0, "ok")], 4.0, bucket_s=2.0)["series"]
    assert series["t"] == [0.0, 2.0, 4.0]
    assert series["total"] == [5, 1, 1] and series["ok"] == [4, 0, 1]

    # the load phase is covered even with no request in its tail
    assert report.summarize([(0.2, "a", 1.0, "ok")], 3.5)["series"]["total"] == [1, 0, 0, 0]

    with pytest.raises(ValueError):
        report.summarize(reqs, 4.0, bucket_s=0)


def test_during_faults_counts_requests_sent_in_each_window_by_code():
    reqs = [(0.5, "a", 1.0, "ok"), (2.0, "a", 1.0, "TIMEOUT"), (2.5, "b", 1.0, "ok"),
            (3.0, "a", 1.0, "UNAVAILABLE"), (3.01, "a", 1.0, "ok"), (6.0, "b", 1.0, "ok"),
            (7.0, "b", 1.0, "UNAVAILABLE"), (7.5, "a", 1.0, "NO_ANSWER")]
    random.Random(1).shuffle(reqs)  # order of the records does not matter
    faults = [{"kind": "stall", "start": 2.0, "end": 3.0},
              {"kind": "storage", "start": 6.5, "end": 9.0},
              {"kind": "stall", "start": 4.0, "end": 5.0}]
    during = report.summarize(reqs, 10.0, faults=faults)["during_faults"]
    assert during == [
        {"kind": "stall", "start": 2.0, "end": 3.0, "requests": 3,
         "codes": {"TIMEOUT": 1, "UNAVAILABLE": 1, "ok": 1}},
        {"kind": "storage", "start": 6.5, "end": 9.0, "requests": 2,
         "codes": {"NO_ANSWER": 1, "UNAVAILABLE": 1}},
        {"kind": "stall", "start": 4.0, "end": 5.0, "requests": 0, "codes": {}},
    ]
    assert report.summarize(reqs, 10.0)["during_faults"] == []


def test_empty_summary():
    s = report.summarize([], 10.0)
    assert s["requests"] == 0 and s["ok"] == 0 and s["errors"] == {}
    assert s["throughput_per_s"] == 0.0 and s["per_op"] == {}
    assert s["series"]["total"] == [0] * 10 and s["series"]["per_op"] == {}
    assert report.summarize([], 0.0)["series"]["t"] == []


# -- write_report --------------------------------------------------------------------------

OPS = ("allocation.quote", "allocation.reserve", "allocation.release", "signal.submit",
       "ledger.get")


def _synthetic_run(n=3000, duration=20.0, seed=7):
    rng = random.Random(seed)
    reqs = []
    for _ in range(n):
        t = rng.uniform(0, duration)
        op = rng.choice(OPS)
        ms = rng.lognormvariate(0.5 if op == "ledger.get" else 2.0, 0.8)
        r = rng.random()
        code = "ok" if r < 0.9 else ("TIMEOUT" if r < 0.95 else
                                     "CONFLICT" if r < 0.99 else "NO_ANSWER")
        reqs.append((t, op, ms, code))
    kills = [{"t": 6.0, "down_s": 1.2}, {"t": 14.0, "down_s": 0.8}]
    faults = [{"kind": "stall", "start": 3.0, "end": 5.0},
              {"kind": "storage", "start": 10.0, "end": 12.0}]
    return reqs, kills, faults


META = {"seed": 7, "clients": 4, "profiles": ["p1", "p2"], "duration_s": 20.0,
        "mix": {"allocation.quote": 0.4, "ledger.get": 0.6}, "chaos": True,
        "endpoint": "tcp://127.0.0.1:5555", "started_at": "2024-01-01T00:00:00Z",
        "db": Path("/tmp/x.db"), "cash": Decimal("1000.50")}


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 1024, (path, len(data))


def test_write_report_failing_audit(tmp_path):
    reqs, kills, faults = _synthetic_run()
    violations = [f"profile p{i}: reserved -1 < 0" for i in range(60)]
    audit = {"ok": False, "violations": violations, "checked": {"profiles": 2, "orders": 91}}
    run_dir = tmp_path / "runs" / "r1"  # does not exist yet
    out = report.write_report(run_dir, meta=META, requests=reqs, kills=kills, faults=faults,
                              audit=audit, duration_s=20.0, extra={"exit_code": 1})

    assert out["json"] == run_dir / "report.json"
    assert out["markdown"] == run_dir / "summary.md"
    assert [p.name for p in out["charts"]] == ["throughput.png", "latency.png",
                                               "percentiles.png"]
    for p in out["charts"]:
        _check_png(p)

    with out["json"].open() as fh:
        doc = json.load(fh)
    assert doc["audit"] == audit
    assert doc["kills"] == kills and doc["faults"] == faults
    assert doc["exit_code"] == 1
    assert doc["meta"]["cash"] == "1000.50" and doc["meta"]["db"] == "/tmp/x.db"
    assert doc["summary"]["requests"] == 3000
    assert sum(o["count"] for o in doc["summary"]["per_op"].values()) == 3000
    assert [f["kind"] for f in doc["summary"]["during_faults"]] == ["stall", "storage"]

    md = out["markdown"].read_text()
    assert "FAIL" in md and "PASS" not in md
    assert md.index("FAIL") < md.index("## Settings")  # the verdict comes first
    assert "profile p0: reserved -1 < 0" in md
    assert "profile p49: reserved -1 < 0" in md
    assert "profile p50: reserved -1 < 0" not in md  # only the first 50 are listed
    assert "... and 10 more" in md
    assert "tcp://127.0.0.1:5555" in md
    for op in OPS:
        assert f"| {op} |" in md
    assert "2 kill(s)" in md and "| 6.00 | 1.20 |" in md
    assert "| stall | 3.00 | 5.00 |" in md and "| storage | 10.00 | 12.00 |" in md
    for name in ("throughput.png", "latency.png", "percentiles.png"):
        assert f"]({name})" in md


def test_write_report_passing_audit(tmp_path):
    reqs, kills, faults = _synthetic_run(n=500)
    audit = {"ok": True, "violations": [], "checked": {"profiles": 2}}
    out = report.write_report(tmp_path, meta=META, requests=reqs, kills=kills,
                              faults=faults, audit=audit, duration_s=20.0)
    md = out["markdown"].read_text()
    assert "PASS" in md and "FAIL" not in md
    assert json.loads(out["json"].read_text())["audit"]["ok"] is True


def test_write_report_empty_run(tmp_path):
    audit = {"ok": True, "violations": [], "checked": {}}
    out = report.write_report(tmp_path / "empty", meta={}, requests=[], kills=[], faults=[],
                              audit=audit, duration_s=0.0)
    for p in out["charts"]:
        _check_png(p)
    doc = json.loads(out["json"].read_text())
    assert doc["summary"]["requests"] == 0 and doc["kills"] == [] and doc["faults"] == []
    md = out["markdown"].read_text()
    assert "PASS" in md and "0 kill(s)" in md and "No requests." in md


def test_write_report_only_unanswered_requests(tmp_path):
    # requests but no latency at all: the latency charts say so instead of failing
    reqs = [(1.0, "ledger.get", 5000.0, "NO_ANSWER"), (2.0, "ledger.get", 5000.0, "NO_ANSWER")]
    out = report.write_report(tmp_path, meta={"seed": 1}, requests=reqs,
                              kills=[{"t": 1.5, "down_s": None}], faults=[],
                              audit={"ok": True, "violations": [], "checked": {}},
                              duration_s=3.0)
    for p in out["charts"]:
        _check_png(p)
    assert "never answered again" in out["markdown"].read_text()


def test_extra_may_not_replace_a_section(tmp_path):
    with pytest.raises(ValueError):
        report.write_report(tmp_path, meta={}, requests=[], kills=[], faults=[],
                            audit={"ok": True, "violations": [], "checked": {}},
                            duration_s=1.0, extra={"audit": {}})
