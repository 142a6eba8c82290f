"""bench/oms.py still runs end to end (a very short run), so the benchmark cannot rot."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TICKS = 300


@pytest.mark.slow
def test_oms_bench_runs_checks_and_prints_every_figure(tmp_path):
    out_json = tmp_path / "oms.json"
    proc = subprocess.run(
        [sys.executable, "bench/oms.py", "--ticks", str(TICKS), "--segment", "200",
         "--baseline-seconds", "0.2", "--json", str(out_json)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    num = r"[\d,]+"
    assert re.search(rf"^\s+\(1\) market orders opened \+ filled\s+[\d.]+\s+{num}\s+{num}"
                     rf"\s+{num}\s+\d+\.\d{{4}}$", out, re.M), out
    assert re.search(rf"^\s+\(2\) round trips, closed by tp / sl\s+[\d.]+\s+{num}\s+{num}"
                     rf"\s+{num}\s+\d+\.\d{{4}}$", out, re.M), out
    assert re.search(rf"^\s+baseline: bare thread \+ SimpleQueue\s+{num}\s+messages/s",
                     out, re.M), out
    assert "NautilusTrader 1.221.0" in out and "3,970" in out, out
    assert re.search(r"\(1\) / reference = \d+\.\d\d", out), out
    assert "CHECK FAILED" not in out, out

    data = json.loads(out_json.read_text())
    assert data["ok"] is True
    assert data["baseline"] > 0 and len(data["baseline_runs"]) == 3
    orders, trips = data["figures"]["orders"], data["figures"]["round_trips"]
    for f in (orders, trips):
        assert f["rate"] > 0 and f["fills_per_s"] > 0 and f["elapsed_s"] > 0, f
        assert f["over_baseline"] > 0, f
        assert f["submitted"] == TICKS, f  # one order per tick
        assert f["orders_by_status"] == {"FILLED": f["submitted"]}, f
        assert f["audits_ok"] and f["problems"] == [], f
    # (1): every order filled and counted once, run as 2 Systems of <= 200 ticks
    assert orders["segments"] == 2
    assert orders["count"] == orders["filled_orders"] == orders["submitted"]
    assert orders["entry_fills"] == orders["fills"] == orders["submitted"]
    assert orders["positions_by_status"] == {"OPEN": orders["submitted"]}
    assert orders["over_reference"] == pytest.approx(orders["rate"] / 3970)
    # (2): what was counted is what storage shows closed; the rest stayed open
    assert trips["segments"] == 1
    assert trips["count"] == trips["closed"] == sum(trips["closed_by"].values())
    assert set(trips["closed_by"]) <= {"tp", "sl"}
    assert trips["count"] + trips["stayed_open"] == trips["submitted"]
    assert trips["positions_by_status"].get("CLOSED", 0) == trips["count"]
    assert trips["exit_fills"] == trips["count"]
    assert trips["fills"] == trips["entry_fills"] + trips["exit_fills"]
    assert trips["count"] > 0
