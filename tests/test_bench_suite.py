"""bench/suite.py: the figures read from each script's --json, the table, a failing
script, and one real (short) run of bench/ledger.py."""

from __future__ import annotations

import json
import sys

import pytest

from capflow import run
from capflow.bench import suite

# -- documents shaped exactly like the scripts write them (see each script's main()) ------

LEDGER_DOC = {"runs": {"a": [6000.0, 6500.0, 7000.0], "b": [4000.0, 4200.0, 4400.0],
                       "c": [17000.0, 18000.0, 19000.0]},
              "median": {"a": 6500.0, "b": 4200.0, "c": 18000.0},
              "a_over_c": 6500.0 / 18000.0}


def _wire_fig(rps, pairs_s=None, p50=0.5, p99=1.0):
    return {"rps": rps, "pairs_s": pairs_s, "p50_ms": p50, "p99_ms": p99}


WIRE_MEDIAN = {"echo@1": _wire_fig(8000.0, p50=0.1, p99=0.2),
               "ledger.get@1": _wire_fig(4000.0),
               "reserve@1": _wire_fig(1000.0, 500.0),
               "quote@1": _wire_fig(2000.0),
               "echo@8": _wire_fig(20000.0, p50=0.3, p99=0.6),
               "ledger.get@8": _wire_fig(12000.0, p99=1.5),
               "reserve@8": _wire_fig(3000.0, 1500.0, p99=6.0),
               "quote@8": _wire_fig(5000.0, p99=3.0)}
WIRE_DOC = {"clients": [1, 8], "seconds": 3.0, "rounds": 3, "cpus": 2,
            "runs": {k: [dict(v, requests=100, errors=0, first_error="")]
                     for k, v in WIRE_MEDIAN.items()},
            "median": WIRE_MEDIAN, "failed": {k: 0 for k in WIRE_MEDIAN},
            "ratios": {"clients": 8, "ledger_get_over_echo": 0.6,
                       "reserve_over_echo": 0.15, "quote_over_echo": 0.25},
            "aims": {"ledger_get_over_echo": 0.5, "reserve_over_echo": 0.25,
                     "quote_over_echo": 0.25, "p99_ms": 5.0}}


def _oms_fig(rate, count, closed=0):
    return {"segments": 1, "elapsed_s": count / rate, "ticks": count + 1, "extra_ticks": 0,
            "submitted": count, "filled_orders": count, "closed": closed,
            "entry_fills": count, "exit_fills": closed,
            "orders_by_status": {"FILLED": count}, "positions_by_status": {"OPEN": count},
            "closed_by": {}, "stayed_open": count - closed, "audits_ok": True,
            "problems": [], "count": closed or count, "rate": rate, "fills": count,
            "fills_per_s": rate, "over_baseline": rate / 20000.0}


OMS_DOC = {"args": {"ticks": 5000, "only": None, "json": "x.json"},
           "baseline_runs": [19000.0, 20000.0, 21000.0], "baseline": 20000.0,
           "reference": {"rate": 3970.0, "text": "NautilusTrader ..."},
           "figures": {"orders": dict(_oms_fig(3000.0, 5000), over_reference=3000.0 / 3970),
                       "round_trips": _oms_fig(1000.0, 5000, closed=4000)},
           "ok": True}


def _results(scripts: dict, quick: bool = True) -> dict:
    return {"quick": quick, "cpus": 2, "elapsed_s": 12.3, "ok": all(
        r["ok"] for r in scripts.values()), "scripts": scripts}


def _ok(figures: dict) -> dict:
    return {"script": "bench/x.py", "ok": True, "error": None, "problems": [],
            "stderr_tail": "", "figures": figures, "returncode": 0}


def test_ledger_figures_are_a_and_b_against_c():
    figs = suite.extract_figures("ledger", LEDGER_DOC)
    assert list(figs) == ["a", "b"]
    a, b = figs["a"], figs["b"]
    assert a["value"] == 6500.0 and a["unit"] == "pairs/s"
    assert a["baseline"] == "(c) bare thread + queue" and a["baseline_value"] == 18000.0
    assert a["ratio"] == 6500.0 / 18000.0
    assert a["aim"] == [{"of": "ratio", "op": ">=", "target": 0.5,
                         "actual": 6500.0 / 18000.0, "met": False}]
    assert b["ratio"] == 4200.0 / 18000.0
    assert b["aim"][0]["of"] == "value" and b["aim"][0]["target"] == 10_000
    assert b["aim"][0]["met"] is False


def test_wire_figures_per_op_and_client_count_against_echo():
    figs = suite.extract_figures("wire", WIRE_DOC)
    assert list(figs) == ["ledger.get@1", "reserve@1", "quote@1",
                          "ledger.get@8", "reserve@8", "quote@8"]
    get8 = figs["ledger.get@8"]
    assert get8["value"] == 12000.0 and get8["baseline_value"] == 20000.0
    assert get8["ratio"] == 12000.0 / 20000.0
    assert get8["baseline"] == "echo (bare ROUTER), 8 clients"
    assert [(a["of"], a["met"]) for a in get8["aim"]] == [("ratio", True), ("p99_ms", True)]
    res8 = figs["reserve@8"]
    assert res8["extra"]["pairs_s"] == 1500.0
    assert [(a["of"], a["met"]) for a in res8["aim"]] == [("ratio", False),
                                                          ("p99_ms", False)]
    quote8 = figs["quote@8"]
    assert quote8["unit"] == "quotes/s"
    assert [(a["of"], a["target"], a["met"]) for a in quote8["aim"]] == [
        ("ratio", 0.25, True)]
    # the aims hold at the largest client count only
    assert figs["ledger.get@1"]["aim"] is None
    assert figs["ledger.get@1"]["ratio"] == 4000.0 / 8000.0
    assert suite.wire_problems(WIRE_DOC) == []
    failing = dict(WIRE_DOC, failed=dict(WIRE_DOC["failed"], **{"quote@8": 3}))
    assert suite.wire_problems(failing) == ["quote@8: 3 failed requests"]


def test_oms_figures_against_the_bare_baseline_and_no_aim():
    figs = suite.extract_figures("oms", OMS_DOC)
    assert list(figs) == ["orders", "round_trips"]
    o = figs["orders"]
    assert o["value"] == 3000.0 and o["unit"] == "orders/s"
    assert o["baseline"] == "bare thread + SimpleQueue" and o["baseline_value"] == 20000.0
    assert o["ratio"] == 3000.0 / 20000.0 == OMS_DOC["figures"]["orders"]["over_baseline"]
    assert o["aim"] is None
    assert o["extra"]["reference"]["ratio"] == 3000.0 / 3970.0
    assert figs["round_trips"]["ratio"] == 1000.0 / 20000.0
    # --only orders writes just that figure
    only = dict(OMS_DOC, figures={"orders": OMS_DOC["figures"]["orders"]})
    assert list(suite.extract_figures("oms", only)) == ["orders"]
    assert suite.oms_problems(OMS_DOC) == []
    bad = dict(OMS_DOC, ok=False, figures={"orders": dict(
        OMS_DOC["figures"]["orders"], problems=["3 orders stored, 4 submitted"])})
    assert suite.oms_problems(bad) == ["orders: 3 orders stored, 4 submitted"]


def test_format_table_one_row_per_figure_with_its_baseline_and_ratio():
    results = _results({name: _ok(suite.extract_figures(name, doc)) for name, doc in
                        (("ledger", LEDGER_DOC), ("wire", WIRE_DOC), ("oms", OMS_DOC))})
    text = suite.format_table(results)
    lines = text.splitlines()
    header = lines[0].split()
    assert header == ["script", "figure", "per", "s", "baseline", "baseline", "per", "s",
                      "ratio", "aim"]
    assert set(lines[1]) == {"-", " "}
    rows = [x for x in lines[2:] if x.startswith(("ledger", "wire", "oms"))]
    assert len(rows) == 2 + 6 + 2
    row_a = next(x for x in rows if "(a) pairs" in x)
    assert "6,500" in row_a and "18,000" in row_a and "0.3611" in row_a
    assert "ratio >= 0.5 NOT met" in row_a
    assert ">= 10,000/s NOT met" in next(x for x in rows if "(b) pairs" in x)
    get8 = next(x for x in rows if "ledger.get requests, 8 clients" in x)
    assert "12,000" in get8 and "20,000" in get8 and "0.6000" in get8
    assert "ratio >= 0.5 met; p99 < 5 ms met" in get8
    orders = next(x for x in rows if "(1) market orders" in x)
    assert "3,000" in orders and "0.1500" in orders and orders.rstrip().endswith("-")
    # the columns line up: every row has its ratio where the header has it
    end = lines[0].index("ratio") + len("ratio")
    assert all(x[end - 6:end].strip().replace(".", "").isdigit() for x in rows)
    assert "FAILED" not in text
    assert "3 script(s) (quick) in 12.3 s" in text


def test_the_table_says_what_an_aim_is_and_that_not_met_is_no_failure(capsys):
    results = _results({name: _ok(suite.extract_figures(name, doc)) for name, doc in
                        (("ledger", LEDGER_DOC), ("wire", WIRE_DOC), ("oms", OMS_DOC))})
    text = suite.format_table(results)
    # ledger: both NOT met; wire at 8 clients: ledger.get both met, reserve neither,
    # quote met
    assert "3 of 7 aim(s) met" in text
    note = " ".join(text[text.index("aim(s) met"):].split())
    assert "machine class" in note and "same run" in note
    assert '"NOT met" is information' in note and "not a failure" in note
    assert "exit status says only whether every benchmark ran" in note
    # a table without aims has no note
    oms = suite.format_table(_results({"oms": _ok(suite.extract_figures("oms", OMS_DOC))}))
    assert "aim(s) met" not in oms
    with pytest.raises(SystemExit):
        run.main(["bench", "--help"])
    assert "'NOT met' is information, not a failure" in " ".join(
        capsys.readouterr().out.split())


def test_format_table_reports_a_failure_with_its_stderr_tail():
    failed = {"script": "bench/wire.py", "ok": False, "error": "exit status 1; no JSON "
              "written", "problems": [], "stderr_tail": "Traceback\nRuntimeError: boom",
              "figures": {}, "returncode": 1}
    text = suite.format_table(_results({"ledger": _ok(suite.extract_figures(
        "ledger", LEDGER_DOC)), "wire": failed}))
    assert any(x.split()[:2] == ["wire", "FAILED"] for x in text.splitlines())
    assert "FAILED wire (bench/wire.py): exit status 1; no JSON written" in text
    assert "    RuntimeError: boom" in text


def test_parse_only():
    assert suite.parse_only(None) == ["ledger", "wire", "oms", "venue"]
    assert suite.parse_only("oms, ledger,oms") == ["oms", "ledger"]
    with pytest.raises(ValueError, match="choose from ledger, wire, oms, venue"):
        suite.parse_only("ledger,nope")


def test_venue_figures_set_each_beside_its_bare_ccxt_baseline():
    doc = {"signals": {"signals": 100, "p50_ms": 250.0, "p99_ms": 400.0, "bare_p50_ms": 2.5,
                       "bare_p99_ms": 9.0, "mean_ms": 260.0},
           "fills": {"fills": 1000, "booked_per_s": 500.0, "elapsed_s": 2.0,
                     "bare_read_per_s": 8000.0, "bare_trades_read": 1000}}
    figs = suite.extract_figures("venue", doc)
    sig, fills = figs["signal_to_venue"], figs["fills_booked"]
    assert (sig["value"], sig["baseline_value"], sig["ratio"]) == (4.0, 400.0, 0.01)
    assert sig["extra"]["p99_ms"] == 400.0
    assert (fills["value"], fills["baseline_value"], fills["ratio"]) == (500.0, 8000.0,
                                                                          0.0625)


def test_the_venue_reconcile_figure_sits_beside_the_bare_reads_of_the_same_pages():
    doc = {"signals": {"signals": 100, "p50_ms": 5.0, "p99_ms": 9.0, "bare_p50_ms": 2.5,
                       "bare_p99_ms": 9.0, "mean_ms": 6.0},
           "fills": {"fills": 1000, "booked_per_s": 500.0, "elapsed_s": 2.0,
                     "bare_read_per_s": 8000.0, "bare_trades_read": 1000},
           "reconcile": {"orders": 10000, "elapsed_s": 4.0, "bare_s": 2.0}}
    rec = suite.extract_figures("venue", doc)["reconcile"]
    assert (rec["value"], rec["baseline_value"], rec["ratio"]) == (2500.0, 5000.0, 0.5)
    assert rec["extra"] == {"orders": 10000, "elapsed_s": 4.0, "bare_s": 2.0}
    assert "10,000 orders" in rec["label"]


def test_the_bench_command_rejects_an_unknown_name(capsys):
    assert run.main(["bench", "--only", "nope"]) == 2
    assert "unknown benchmark(s) nope" in capsys.readouterr().err


# -- failing scripts -------------------------------------------------------------------------

def test_a_failing_script_is_reported_and_the_others_still_run(tmp_path):
    crash = tmp_path / "crash.py"
    crash.write_text("import sys\nprint('starting', flush=True)\n"
                     "print('line 1', file=sys.stderr)\n"
                     "raise SystemExit('it broke: no figures')\n")
    silent = tmp_path / "silent.py"  # exits 0, writes no JSON
    silent.write_text("print('nothing to see')\n")
    odd = tmp_path / "odd.py"  # writes JSON of the wrong shape
    odd.write_text("import json, sys\n"
                   "json.dump({'median': {}}, open(sys.argv[sys.argv.index('--json') + 1],"
                   " 'w'))\n")
    good = tmp_path / "good.py"  # writes a ledger-shaped document
    good.write_text("import json, sys\n"
                    f"json.dump({LEDGER_DOC!r}, open(sys.argv[sys.argv.index('--json') + 1],"
                    " 'w'))\n")
    scripts = {"crash": suite.Script(crash, (), suite.ledger_figures),
               "silent": suite.Script(silent, (), suite.ledger_figures),
               "odd": suite.Script(odd, (), suite.ledger_figures),
               "good": suite.Script(good, ("--ignored",), suite.ledger_figures)}
    out_dir = tmp_path / "out"
    results = suite.run_suite(None, quick=True, scripts=scripts, out_dir=out_dir,
                              timeout=30)
    assert results["ok"] is False
    r = results["scripts"]
    assert r["crash"]["ok"] is False and r["crash"]["returncode"] == 1
    assert r["crash"]["error"] == "exit status 1; no JSON written"
    assert r["crash"]["stderr_tail"] == "line 1\nit broke: no figures"
    assert r["silent"]["ok"] is False and r["silent"]["error"] == "no JSON written"
    assert r["odd"]["ok"] is False and "JSON not as expected: KeyError" in r["odd"]["error"]
    assert r["good"]["ok"] is True and r["good"]["figures"]["a"]["value"] == 6500.0
    assert r["good"]["argv"][-3:] == ["--ignored", "--json", str(out_dir / "good.json")]
    assert (out_dir / "crash.stdout.txt").read_text() == "starting\n"
    text = suite.format_table(results)
    assert "FAILED crash" in text and "    it broke: no figures" in text
    assert "FAILED silent" in text and "FAILED odd" in text and "FAILED good" not in text
    json.dumps(results)  # JSON-ready


def test_the_command_prints_the_failure_and_exits_1(tmp_path, monkeypatch, capsys):
    crash = tmp_path / "crash.py"
    crash.write_text("raise SystemExit('no luck')\n")
    good = tmp_path / "good.py"
    good.write_text("import json, sys\n"
                    f"json.dump({LEDGER_DOC!r}, open(sys.argv[sys.argv.index('--json') + 1],"
                    " 'w'))\n")
    monkeypatch.setattr(suite, "SCRIPTS", {
        "crash": suite.Script(crash, (), suite.ledger_figures),
        "good": suite.Script(good, (), suite.ledger_figures)})
    out_json = tmp_path / "all.json"
    assert suite.command(suite.parse_only(None), json_path=str(out_json)) == 1
    out = capsys.readouterr().out
    assert "FAILED crash" in out and "    no luck" in out and "(a) pairs" in out
    written = json.loads(out_json.read_text())
    assert written["ok"] is False
    assert written["scripts"]["good"]["figures"]["a"]["ratio"] == 6500.0 / 18000.0
    monkeypatch.setattr(suite, "SCRIPTS", {"good": suite.SCRIPTS["good"]})
    assert suite.command(["good"]) == 0


def test_verbose_passes_the_script_output_through(tmp_path, capsys):
    chatty = tmp_path / "chatty.py"
    chatty.write_text("print('hello from the script')\n")
    scripts = {"chatty": suite.Script(chatty, (), suite.ledger_figures)}
    suite.run_suite(None, scripts=scripts, timeout=30)
    assert "hello from the script" not in capsys.readouterr().out
    suite.run_suite(None, scripts=scripts, verbose=True, out=sys.stdout, timeout=30)
    assert "chatty| hello from the script" in capsys.readouterr().out


# -- one real run ----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_real_quick_ledger_run(tmp_path):
    # the quick settings (1 round of 1 s each for a, b and c), with fewer callers
    results = suite.run_suite(["ledger"], quick=True, timeout=30,
                              extra_args={"ledger": ["--callers", "4", "--seconds", "0.5"]})
    r = results["scripts"]["ledger"]
    assert r["ok"], r
    assert results["ok"] is True and r["elapsed_s"] < 30
    assert set(r["figures"]) == {"a", "b"}
    for f in r["figures"].values():
        assert f["value"] > 0 and f["baseline_value"] > 0
        assert f["ratio"] == f["value"] / f["baseline_value"]
    text = suite.format_table(results)
    assert "(a) pairs, actors, storage off" in text and "(c) bare thread + queue" in text


def test_figures_that_cannot_be_written_are_one_line_after_the_table(tmp_path, monkeypatch,
                                                                      capsys):
    good = tmp_path / "good.py"
    good.write_text("import json, sys\n"
                    f"json.dump({LEDGER_DOC!r}, open(sys.argv[sys.argv.index('--json') + 1],"
                    " 'w'))\n")
    monkeypatch.setattr(suite, "SCRIPTS", {"good": suite.Script(good, (),
                                                                suite.ledger_figures)})
    assert suite.command(["good"], json_path=str(tmp_path)) == 1  # a folder
    captured = capsys.readouterr()
    assert "(a) pairs" in captured.out  # the figures were shown all the same
    assert captured.err.splitlines()[-1] == (f"capflow: cannot write the figures to "
                                             f"{tmp_path}: Is a directory")


@pytest.mark.parametrize("where, cause", [
    ("{tmp}", "Is a directory"),
    ("{tmp}/file/x.json", "Not a directory"),
    ("{tmp}/none/x.json", "No such file or directory"),
    ("/proc/capflow-bench.json", ""),
])
def test_bench_json_that_cannot_be_written_is_said_before_anything_runs(tmp_path, where,
                                                                       cause):
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "file").write_text("")
    path = where.format(tmp=tmp_path)
    done = subprocess.run([str(Path(sys.executable).with_name("capflow")), "bench",
                           "--quick", "--only", "ledger", "--json", path],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""  # nothing ran
    assert done.stderr.startswith(f"capflow: cannot write the figures to {path}: {cause}")
    assert done.stderr.count("\n") == 1, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("command", [["bench", "--quick", "--only", "ledger", "--out-dir"],
                                     ["stress", "--ops", "1", "--out"]])
def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path, command):
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "file").write_text("")
    capflow = str(Path(sys.executable).with_name("capflow"))
    for where, cause in ((tmp_path / "file", "that is a file"),
                         (tmp_path / "file" / "runs", "Not a directory")):
        done = subprocess.run([capflow, *command, str(where)], capture_output=True,
                              text=True, timeout=600)
        assert (done.returncode, done.stdout) == (1, ""), done.stderr
        assert done.stderr == f"capflow: cannot make the folder {command[-1]} {where}: {cause}\n"
