"""The benchmark suite: run the scripts of bench/ one after another, each figure beside
the baseline it measured in the same run.

    capflow bench [--quick] [--only ledger,wire,oms] [--json FILE] [--out-dir DIR]
                  [--verbose]

Each script runs as a subprocess of the same Python (`sys.executable`) with
``--json <file>``; the figures are read from that file, never from its printed text:

  ledger  (a) actors, storage off and (b) actors, durable, in reserve + release pairs/s,
          against (c) the same Ledger calls on a bare thread fed by a SimpleQueue;
  wire    ledger.get, reserve + release (durable) and allocation.quote over the wire,
          per client count, in requests/s (quotes: answered ok), against a bare pyzmq
          ROUTER echo at the same client count;
  oms     (1) market orders opened + filled and (2) round trips closed by tp / sl, per
          second, durable, against a bare thread + SimpleQueue (messages/s).

ratio = figure / baseline, both medians of the same run (the machine is shared and
noisy: a ratio travels between runs and machines better than a rate). The aims are the
ones each script states: ledger's in its docstring, wire's in its JSON; oms states none.
An aim is a figure set for the machine class this project is measured on (2 CPUs),
mostly as a ratio to its same-run baseline; "NOT met" is information about this run,
not a failure. The exit status says whether the benchmarks ran: 0 when every script ran
and wrote its figures, 1 when one failed (`AIMS_NOTE`, printed under the table).
A script that exits non-zero, writes no JSON, or writes JSON this module does not
understand is reported as FAILED with the tail of its stderr; the others still run.

Importing this module runs nothing: `run_suite` runs scripts and returns the results
(a JSON-ready dict), `format_table` prints them. Standard library only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from capflow.bench.figures import (
    ledger_figures,
    oms_figures,
    oms_problems,
    venue_figures,
    wire_figures,
    wire_problems,
)

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
STDERR_TAIL_LINES = 20
STDERR_TAIL_CHARS = 4000


# -- reading what each script writes to --json -----------------------------------------------

class Script(NamedTuple):
    """One benchmark: where it is, its short settings, and how to read its --json."""
    path: Path
    quick_args: tuple[str, ...]
    figures: Callable[[Mapping], dict[str, dict]]
    problems: Callable[[Mapping], list[str]] = lambda doc: []


#: the suite, in the order it runs; the quick settings keep all four well under three
#: minutes on two cores
SCRIPTS: dict[str, Script] = {
    "ledger": Script(BENCH_DIR / "ledger.py", ("--seconds", "1", "--rounds", "1"),
                     ledger_figures),
    "wire": Script(BENCH_DIR / "wire.py",
                   ("--seconds", "1", "--rounds", "1", "--clients", "8"),
                   wire_figures, wire_problems),
    "oms": Script(BENCH_DIR / "oms.py", ("--ticks", "5000", "--only", "orders"),
                  oms_figures, oms_problems),
    "venue": Script(BENCH_DIR / "venue.py", ("--signals", "100", "--fills", "1000"),
                    venue_figures),
}


def extract_figures(name: str, doc: Mapping, scripts: Mapping[str, Script] | None = None
                    ) -> dict[str, dict]:
    """The figures of script `name` from the document it wrote to --json."""
    return (scripts or SCRIPTS)[name].figures(doc)


# -- running -------------------------------------------------------------------------------

def parse_only(text: str | None, scripts: Mapping[str, Script] | None = None) -> list[str]:
    """``ledger,wire`` -> ["ledger", "wire"]; None or "" -> every script."""
    table = scripts or SCRIPTS
    if not text:
        return list(table)
    names = list(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    unknown = [x for x in names if x not in table] if names else [repr(text)]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(table)}")
    return names


def _pump(stream, lines: list[str], echo: TextIO | None, prefix: str) -> None:
    for line in stream:
        lines.append(line)
        if echo is not None:
            echo.write(prefix + line)
            echo.flush()


def _tail(lines: Sequence[str]) -> str:
    text = "".join(lines[-STDERR_TAIL_LINES:]).rstrip()
    return text[-STDERR_TAIL_CHARS:]


def run_script(name: str, script: Script, quick: bool, json_path: Path, *,
               extra_args: Sequence[str] = (), verbose: bool = False,
               out: TextIO | None = None, err: TextIO | None = None,
               timeout: float | None = None, log_dir: Path | None = None) -> dict:
    """Run one script to the end; what it measured, or why it failed."""
    argv = [sys.executable, "-u", str(script.path), *(script.quick_args if quick else ()),
            *extra_args, "--json", str(json_path)]
    result: dict[str, Any] = {"script": _shown(script.path), "argv": argv[2:],
                              "ok": False, "returncode": None, "elapsed_s": None,
                              "error": None, "problems": [], "stderr_tail": "",
                              "figures": {}}
    json_path.unlink(missing_ok=True)
    stdout: list[str] = []
    stderr: list[str] = []
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace")
    except OSError as exc:
        result["error"] = f"could not start: {exc}"
        return result
    pumps = [threading.Thread(target=_pump, daemon=True, args=(
                 proc.stdout, stdout, (out or sys.stdout) if verbose else None, f"{name}| ")),
             threading.Thread(target=_pump, daemon=True, args=(
                 proc.stderr, stderr, (err or sys.stderr) if verbose else None, f"{name}| "))]
    for t in pumps:
        t.start()
    timed_out = False
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _end(proc)
    except BaseException:  # Ctrl-C: end the script (it ends its own children), then go
        _end(proc)
        raise
    for t in pumps:
        t.join(10)
    result["elapsed_s"] = time.perf_counter() - t0
    result["returncode"] = proc.returncode
    result["stderr_tail"] = _tail(stderr)
    if log_dir is not None:
        Path(log_dir, f"{name}.stdout.txt").write_text("".join(stdout))
        Path(log_dir, f"{name}.stderr.txt").write_text("".join(stderr))
    errors = []
    if timed_out:
        errors.append(f"timed out after {timeout:g} s")
    elif proc.returncode != 0:
        errors.append(f"exit status {proc.returncode}")
    try:
        doc = json.loads(json_path.read_text())
    except FileNotFoundError:
        errors.append("no JSON written")
    except (OSError, ValueError) as exc:
        errors.append(f"unreadable JSON: {exc}")
    else:
        try:
            result["figures"] = script.figures(doc)
            result["problems"] = script.problems(doc)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            errors.append(f"JSON not as expected: {type(exc).__name__}: {exc}")
        if not result["figures"] and not errors:
            errors.append("no figures in its JSON")
    result["error"] = "; ".join(errors) or None
    result["ok"] = not errors
    return result


def _end(proc: subprocess.Popen) -> None:
    """SIGTERM (wire.py then ends its children), SIGKILL if that is not enough."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def run_suite(names: Iterable[str] | None = None, quick: bool = False, *,
              verbose: bool = False, out_dir: str | Path | None = None,
              scripts: Mapping[str, Script] | None = None,
              extra_args: Mapping[str, Sequence[str]] | None = None,
              timeout: float | None = None, out: TextIO | None = None,
              err: TextIO | None = None,
              progress: Callable[[str], None] | None = None) -> dict:
    """Run the named scripts (default: all, in the table's order) one after another.

    `quick`: their short settings; `extra_args`: per name, more arguments after those
    (the last of a repeated option wins); `verbose`: pass each script's output through
    to `out` / `err` as it comes, prefixed with its name; `out_dir`: keep each script's
    JSON and output there (default: a temporary directory); `scripts`: another script
    table (tests); `timeout`: seconds per script; `progress`: called with a line before
    and after each script. Returns a JSON-ready dict; its "ok" is False when any script
    failed."""
    table = scripts or SCRIPTS
    names = list(table) if names is None else list(names)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(table)}")
    results: dict[str, Any] = {"quick": quick, "python": sys.executable,
                               "cpus": len(os.sched_getaffinity(0)),
                               "cpu_count": os.cpu_count(), "ok": True, "elapsed_s": 0.0,
                               "scripts": {}}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="capflow-bench-suite-") as tmp:
        folder = Path(out_dir) if out_dir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        keep = out_dir is not None
        for name in names:
            if progress:
                progress(f"bench: running {name} ...")
            r = run_script(name, table[name], quick, folder / f"{name}.json",
                           extra_args=(extra_args or {}).get(name, ()), verbose=verbose,
                           out=out, err=err, timeout=timeout,
                           log_dir=folder if keep else None)
            results["scripts"][name] = r
            results["ok"] = results["ok"] and r["ok"]
            if progress:
                state = "ok" if r["ok"] else f"FAILED ({r['error']})"
                progress(f"bench: {name} {state} in {r['elapsed_s'] or 0:.1f} s")
    results["elapsed_s"] = time.perf_counter() - t0
    return results


# -- printing ------------------------------------------------------------------------------

COLUMNS = ("script", "figure", "per s", "baseline", "baseline per s", "ratio", "aim")
#: under a table with aims: what an aim is, and what "NOT met" does not mean
AIMS_NOTE = ("aim: a figure set for the machine class capflow is measured on (2 CPUs), "
             "mostly as a\nratio to the baseline measured in the same run. \"NOT met\" is "
             "information about this\nrun on this machine, not a failure: the exit status "
             "says only whether every benchmark\nran and wrote its figures (0: they did).")
RIGHT = {"per s", "baseline per s", "ratio"}


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def aim_text(aim: list[dict] | None) -> str:
    """[{of: ratio, op: >=, target: 0.5, met: False}] -> "ratio >= 0.5 NOT met"."""
    if not aim:
        return "-"
    parts = []
    for a in aim:
        if a["of"] == "ratio":
            what = f"ratio {a['op']} {a['target']:g}"
        elif a["of"] == "p99_ms":
            what = f"p99 {a['op']} {a['target']:g} ms"
        else:
            what = f"{a['op']} {a['target']:,.0f}/s"
        verdict = {True: "met", False: "NOT met"}.get(a["met"], "?")
        parts.append(f"{what} {verdict}")
    return "; ".join(parts)


def table_rows(results: Mapping) -> list[tuple[str, ...]]:
    rows = []
    for name, r in results["scripts"].items():
        for f in r["figures"].values():
            rows.append((name, f["label"], _rate(f["value"]), f["baseline"],
                         _rate(f["baseline_value"]),
                         "-" if f["ratio"] is None else f"{f['ratio']:.4f}",
                         aim_text(f["aim"])))
        if not r["ok"]:
            rows.append((name, "FAILED", "-", "-", "-", "-", "-"))
    return rows


def format_table(results: Mapping) -> str:
    """The figures as one table, then what failed (with the tail of its stderr)."""
    rows = [COLUMNS, *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]

    def line(row) -> str:
        cells = [cell.rjust(w) if col in RIGHT else cell.ljust(w)
                 for cell, w, col in zip(row, widths, COLUMNS, strict=True)]
        return "  ".join(cells).rstrip()

    lines = [line(COLUMNS), "  ".join("-" * w for w in widths)]
    lines += [line(row) for row in rows[1:]]
    scripts = results["scripts"]
    lines.append("")
    lines.append(f"{len(scripts)} script(s){' (quick)' if results.get('quick') else ''} "
                 f"in {results.get('elapsed_s', 0):.1f} s on {results.get('cpus', '?')} "
                 f"CPU(s); ratio = per s / baseline per s, medians of the same run")
    aims = [a for r in scripts.values() for f in r["figures"].values()
            for a in f["aim"] or ()]
    if aims:
        missed = sum(1 for a in aims if a["met"] is False)
        lines.append(f"{len(aims) - missed} of {len(aims)} aim(s) met. {AIMS_NOTE}")
    for name, r in scripts.items():
        if r["ok"]:
            continue
        lines.append("")
        lines.append(f"FAILED {name} ({r['script']}): {r['error']}")
        lines += [f"  problem: {p}" for p in r["problems"]]
        if r["stderr_tail"]:
            lines.append("  stderr (tail):")
            lines += [f"    {x}" for x in r["stderr_tail"].splitlines()]
    return "\n".join(lines)


def command(names: Sequence[str], quick: bool = False, *, json_path: str | None = None,
            out_dir: str | None = None, verbose: bool = False, out: TextIO | None = None,
            err: TextIO | None = None) -> int:
    """`capflow bench`: run, print the table, write --json; 0, or 1 if any failed."""
    out = out or sys.stdout
    err = err or sys.stderr

    def progress(text: str) -> None:
        print(text, file=err, flush=True)

    results = run_suite(names, quick, verbose=verbose, out_dir=out_dir, out=out, err=err,
                        progress=progress)
    print(format_table(results), file=out, flush=True)
    if json_path:
        try:
            Path(json_path).write_text(json.dumps(results, indent=2, default=str))
        except OSError as exc:
            print(f"capflow: cannot write the figures to {json_path}: "
                  f"{exc.strerror or exc}", file=err)
            return 1
        print(f"wrote {json_path}", file=out)
    return 0 if results["ok"] else 1


def writable(path: str | Path) -> str | None:
    """Why a file cannot be written at `path` (its OS error), or None when it can: found
    out by opening it to append (nothing in it changes; a file made so is removed), so a
    run of minutes is not lost to a path that was wrong from the start."""
    path = Path(path)
    existed = path.exists()
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    if not existed:
        path.unlink(missing_ok=True)
    return None
