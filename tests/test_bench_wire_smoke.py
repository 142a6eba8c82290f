"""bench/wire.py still runs end to end (a very short run), so the benchmark cannot rot."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wire_bench_runs_and_prints_every_figure(tmp_path):
    out_json = tmp_path / "wire.json"
    proc = subprocess.run(
        [sys.executable, "bench/wire.py", "--seconds", "0.3", "--rounds", "1",
         "--warmup", "0.05", "--dir", str(tmp_path), "--json", str(out_json)],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    num = r"[\d,]+"
    for clients in (1, 8):
        assert re.search(rf"^\s+{clients}\s+echo \(bare ROUTER\)\s+{num}\s", out, re.M), out
        assert re.search(rf"^\s+{clients}\s+ledger\.get\s+{num}\s", out, re.M), out
        assert re.search(rf"^\s+{clients}\s+reserve\+release, durable\s+{num}\s+{num}\s",
                         out, re.M), out
        # the quote line: ok quotes/s, no pairs/s, and not one failed quote
        quote = re.search(rf"^\s+{clients}\s+allocation\.quote\s+({num})\s+-\s+[\d.]+\s+"
                          r"[\d.]+\s+(\d+)$", out, re.M)
        assert quote, out
        assert int(quote.group(1).replace(",", "")) > 0, out
        assert quote.group(2) == "0", out
    assert re.search(r"ledger\.get / echo = \d+\.\d\d\s+aim >= 0\.5", out), out
    assert re.search(r"reserve requests / echo = \d+\.\d\d\s+aim >= 0\.25", out), out
    ratio = re.search(r"at 8 clients: quotes / echo = (\d+\.\d\d)\s+aim >= 0\.25 "
                      r"\((met|NOT met)\)", out)
    assert ratio, out
    assert re.search(r"p99 ledger\.get [\d.]+ ms, reserve [\d.]+ ms\s+aim < 5 ms", out), out
    figures = json.loads(out_json.read_text())
    for key in ("echo@8", "ledger.get@8", "reserve@8", "quote@8"):
        assert figures["median"][key]["rps"] > 0, figures["median"]
    assert figures["median"]["reserve@8"]["pairs_s"] > 0
    assert figures["median"]["quote@8"]["pairs_s"] is None
    assert figures["ratios"]["quote_over_echo"] > 0
    assert figures["aims"]["quote_over_echo"] == 0.25
