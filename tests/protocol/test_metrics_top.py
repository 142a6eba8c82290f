"""`system.metrics` (per-op counts, error codes, latency histograms kept by the gateway)
and `capflow top` (protocol/top.py), against a live server and on hand-made readings."""

from __future__ import annotations

import argparse
import io
import socket
import threading
import time

import msgpack
import pytest
from rich.console import Console

from capflow.protocol import top
from capflow.protocol.client import Client, ClientError
from capflow.protocol.metrics import BUCKET_BASE_US, BUCKET_FACTOR, bucket_of, percentile_ms


def _upper_ms(i: int) -> float:
    return BUCKET_BASE_US * BUCKET_FACTOR ** (i + 1) / 1000


def _check_op(stats: dict) -> None:
    assert stats["count"] == stats["ok"] + sum(stats["errors"].values())
    assert sum(stats["histogram"].values()) == stats["count"]
    assert all(k.isdigit() for k in stats["histogram"])
    assert 0 < stats["p50_ms"] <= stats["p99_ms"] <= stats["max_ms"]


# -- the op, against a live server --------------------------------------------------------

def test_metrics_count_outcomes_error_codes_and_latencies(live, raw):
    server = live()
    with Client(server.endpoint, timeout_s=5, retries=0) as c:
        c.profile_create("alpha", "1000")
        for _ in range(25):
            c.ledger_get("alpha")
        for _ in range(4):
            with pytest.raises(ClientError) as exc:
                c.profile_get("ghost")
            assert exc.value.code == "NOT_FOUND"
        with pytest.raises(ClientError):
            c.call("no.such.op")
        with pytest.raises(ClientError):
            c.call("ledger.get", profile_id="alpha", colour="red")  # INVALID_ARGUMENT
        r = raw(server.endpoint)
        r.send_bytes(b"\xc1")  # BAD_REQUEST: refused before admission
        assert r.recv()["error"]["code"] == "BAD_REQUEST"
        again = msgpack.packb({"v": 1, "id": "same-1", "op": "ledger.get",
                               "args": {"profile_id": "alpha"}})
        for _ in range(2):  # the second is answered from the cache
            r.send_bytes(again)
            assert r.recv()["ok"] is True
        m = c.system_metrics()

    assert m["bucket_base_us"] == 10.0 and m["bucket_factor"] == 1.25
    assert m["uptime_s"] > 0
    # every frame: 1 + 25 + 4 + 1 + 1 (client) + 3 (raw) + this one
    assert m["requests"] == 36
    assert m["refused"] == 1 and m["refused_codes"] == {"BAD_REQUEST": 1}
    assert m["deduplicated"] == 1
    ops = m["ops"]
    get = ops["ledger.get"]
    assert get["count"] == 27 and get["ok"] == 26  # 25 + one invalid + one raw
    assert get["errors"] == {"INVALID_ARGUMENT": 1}
    assert ops["profile.get"]["count"] == 4 and ops["profile.get"]["ok"] == 0
    assert ops["profile.get"]["errors"] == {"NOT_FOUND": 4}
    assert ops["(unknown)"]["errors"] == {"UNKNOWN_OP": 1}
    assert ops["profile.create"]["ok"] == 1
    assert "system.metrics" not in ops  # recorded when it is answered, after the reading
    for stats in ops.values():
        _check_op(stats)
    assert get["max_ms"] < 5000


def test_a_timeout_answer_counts_and_so_does_the_real_outcome(live, raw, monkeypatch):
    from capflow.protocol import ops
    from capflow.protocol.profile_ops import ProfileArgs

    server = live(server={"request_timeout_s": 0.2})

    def slow(ctx, args, caller, done):
        threading.Timer(0.5, lambda: done({"late": True})).start()

    monkeypatch.setitem(ops.OPS, "ledger.get", (ProfileArgs, slow))
    r = raw(server.endpoint)
    assert r.request("ledger.get", {"profile_id": "x"})["error"]["code"] == "TIMEOUT"
    time.sleep(0.5)
    with Client(server.endpoint, timeout_s=5, retries=0) as c:
        deadline = time.monotonic() + 3
        while True:
            stats = c.system_metrics()["ops"]["ledger.get"]
            if stats["ok"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert stats["count"] == 2 and stats["ok"] == 1 and stats["errors"] == {"TIMEOUT": 1}
    _check_op(stats)
    assert stats["max_ms"] >= 450  # the real outcome, timed from admission


def test_metrics_is_open_to_a_restricted_caller():
    from capflow.protocol.opkit import Caller, OpContext
    from capflow.protocol.ops import dispatch

    answers = []
    ctx = OpContext(None, dict, None, lambda: {"ops": {}})
    dispatch(ctx, "system.metrics", {}, Caller("key:bot", frozenset()),
             lambda result=None, error=None: answers.append((result, error)))
    assert answers == [({"ops": {}}, None)]


# -- the histogram arithmetic --------------------------------------------------------------

@pytest.mark.parametrize("seconds", [12e-6, 30e-6, 99e-6, 1e-3, 0.0123, 0.5, 3.0, 60.0])
def test_a_latency_lands_in_the_bucket_that_covers_it(seconds):
    i = bucket_of(seconds)
    assert BUCKET_BASE_US * BUCKET_FACTOR ** i <= seconds * 1e6 < (
        BUCKET_BASE_US * BUCKET_FACTOR ** (i + 1))


def test_the_shortest_and_longest_latencies_stay_in_range():
    assert bucket_of(0.0) == 0 and bucket_of(5e-6) == 0 and bucket_of(10e-6) == 0
    assert bucket_of(1e9) == 99


def test_percentiles_of_a_histogram():
    hist = {"5": 90, "30": 10}
    assert percentile_ms(hist, 0.5) == pytest.approx(_upper_ms(5))
    assert percentile_ms(hist, 0.9) == pytest.approx(_upper_ms(5))  # rank 90 of 100
    assert percentile_ms(hist, 0.91) == pytest.approx(_upper_ms(30))
    assert percentile_ms(hist, 0.99) == pytest.approx(_upper_ms(30))
    assert percentile_ms(hist, 0.99, cap_ms=1.0) == 1.0
    assert percentile_ms({2: 1}, 0.5) == pytest.approx(_upper_ms(2))  # int keys too
    assert percentile_ms({}, 0.5) is None and percentile_ms({"3": 0}, 0.5) is None
    # another bucket layout
    assert percentile_ms({"0": 1}, 0.5, base_us=100, factor=2) == pytest.approx(0.2)


def test_percentiles_over_a_window_subtract_two_readings():
    old = {"10": 100, "20": 5}
    new = {"10": 100, "20": 6, "25": 3, "40": 1}  # the window: 20 x1, 25 x3, 40 x1
    assert top.hist_delta(new, old) == {"20": 1, "25": 3, "40": 1}
    assert top.window_percentile(new, old, 0.2) == pytest.approx(_upper_ms(20))
    assert top.window_percentile(new, old, 0.5) == pytest.approx(_upper_ms(25))
    assert top.window_percentile(new, old, 0.99) == pytest.approx(_upper_ms(40))
    # cumulative, the whole history is dominated by bucket 10
    assert top.window_percentile(new, None, 0.5) == pytest.approx(_upper_ms(10))
    assert top.window_percentile(old, old, 0.5) is None  # nothing in between


def _metrics(uptime: float, requests: int, ops: dict) -> dict:
    return {"uptime_s": uptime, "requests": requests, "refused": 0,
            "bucket_base_us": 10.0, "bucket_factor": 1.25, "ops": ops}


def _op(count: int, hist: dict, errors: dict | None = None, max_ms: float = 1000.0) -> dict:
    errors = errors or {}
    return {"count": count, "ok": count - sum(errors.values()), "errors": errors,
            "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": max_ms, "histogram": hist}


def test_rows_are_rates_and_percentiles_over_the_interval():
    prev = top.Reading(0.0, _metrics(10.0, 100, {
        "ledger.get": _op(50, {"20": 50}),
        "profile.get": _op(10, {"30": 10}, {"NOT_FOUND": 10})}))
    cur = top.Reading(2.0, _metrics(12.0, 400, {
        "ledger.get": _op(250, {"20": 50, "25": 200}),
        "profile.get": _op(14, {"30": 14}, {"NOT_FOUND": 12}),
        "profile.create": _op(1, {"40": 1})}))
    span, rows = top.op_rows(prev, cur)
    assert span == pytest.approx(2.0)
    by_op = {r["op"]: r for r in rows}
    assert by_op["ledger.get"]["rate"] == pytest.approx(100.0)
    assert by_op["ledger.get"]["error_rate"] == 0
    assert by_op["ledger.get"]["p50_ms"] == pytest.approx(_upper_ms(25))
    assert by_op["profile.get"]["rate"] == pytest.approx(2.0)
    assert by_op["profile.get"]["error_rate"] == pytest.approx(1.0)
    assert by_op["profile.create"]["rate"] == pytest.approx(0.5)  # new since the last
    assert by_op["profile.create"]["p99_ms"] == pytest.approx(_upper_ms(40))
    # first reading: since the start
    span, rows = top.op_rows(None, cur)
    assert span == 0.0
    first = {r["op"]: r for r in rows}["ledger.get"]
    assert first["rate"] == pytest.approx(250 / 12)
    assert first["p50_ms"] == pytest.approx(_upper_ms(25))
    # a restarted server (uptime went back) is not subtracted either
    assert top.op_rows(cur, prev)[0] == 0.0


def _text(renderable) -> str:
    buf = io.StringIO()
    Console(file=buf, width=200).print(renderable)
    return buf.getvalue()


def test_render_shows_profiles_positions_and_tripped_breakers():
    breakers = {"daily": {"code": "DRAWDOWN_DAILY", "tripped": True},
                "max": {"code": "MAX_DRAWDOWN", "tripped": False}}
    ledger = {"allocated": "10000.00", "available": "9874.05", "held": "1.00",
              "reserved_for_orders": "2.00", "reserved_for_positions": "3.00",
              "realized_pnl": "-120.86", "fees": "5.09"}
    profiles = [{"profile_id": "alpha", "state": "ACTIVE", "ledger": ledger,
                 "risk": {"open_positions": 2, "breakers": breakers}},
                {"profile_id": "beta", "state": "HALTED", "ledger": ledger,
                 "risk": {"open_positions": 1, "breakers": {}}}]
    health = {"version": "9.9.9", "trading_state": "REDUCE_ONLY", "storage": "memory",
              "profiles": 5}
    cur = top.Reading(1.0, _metrics(3725.0, 10, {"ledger.get": _op(3, {"20": 3})}),
                      health, profiles)
    text = _text(top.render(None, cur, "tcp://example:7100"))
    for needle in ("tcp://example:7100", "01:02:05", "v9.9.9", "REDUCE_ONLY", "memory",
                   "alpha", "beta", "HALTED", "-120.86", "9874.05", "daily",
                   "profiles (2 of 5)", "ledger.get", "open positions 3",
                   "breakers tripped 1"):
        assert needle in text, (needle, text)
    assert "max" not in text.split("beta")[0].split("alpha")[1]  # not tripped
    down = _text(top.render(cur, top.Reading(2.0, error="no answer"), "tcp://example:7100"))
    assert "no answer" in down and "alpha" not in down


# -- the command --------------------------------------------------------------------------

def _args(endpoint: str, **kw) -> argparse.Namespace:
    return argparse.Namespace(**{"endpoint": endpoint, "interval": 0.2, "once": True,
                                 "profiles": 10, "timeout": 2.0, **kw})


def test_top_once_against_a_live_server(live):
    server = live()
    with Client(server.endpoint, timeout_s=5, retries=0) as c:
        c.profile_create("alpha", "1000")
        c.profile_create("beta", "2000")
        c.profile_set_state("beta", "HALTED", reason="test")
        for _ in range(5):
            c.ledger_get("alpha")
    out = io.StringIO()
    assert top.command(server.config, _args(server.endpoint), curve=None, out=out) == 0
    text = out.getvalue()
    for needle in ("alpha", "beta", "HALTED", "ACTIVE", "1000.00", "2000.00",
                   "profile.create", "profile.set_state", "ledger.get", "system.metrics",
                   "system.health", "profile.list", "profile.get", server.endpoint,
                   "requests, last", "profiles (2 of 2)", "open positions 0",
                   "breakers tripped 0"):
        assert needle in text, (needle, text)
    assert "\x1b[" not in text  # no terminal codes in a file


def test_top_once_shows_at_most_the_profiles_asked_for(live):
    server = live()
    with Client(server.endpoint, timeout_s=5, retries=0) as c:
        for pid in ("p1", "p2", "p3"):
            c.profile_create(pid, "10")
    out = io.StringIO()
    args = _args(server.endpoint, profiles=2, interval=0.05)
    assert top.command(server.config, args, curve=None, out=out) == 0
    text = out.getvalue()
    assert "p1" in text and "p2" in text and "p3" not in text
    assert "profiles (2 of 3)" in text


def _free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def test_top_once_without_a_server_says_so(capsys):
    endpoint = _free_endpoint()
    cfg = argparse.Namespace(server=argparse.Namespace(endpoint=endpoint))
    out = io.StringIO()
    began = time.monotonic()
    rc = top.command(cfg, _args(None, timeout=0.2), curve=None, out=out)
    assert rc == 1
    assert time.monotonic() - began < 2
    assert (f"capflow: no capflow server answers at {endpoint} (is it running? see "
            "--endpoint)") in capsys.readouterr().err
    assert out.getvalue() == ""


def test_top_live_without_a_server_says_so_at_once(capsys):
    endpoint = _free_endpoint()
    args = _args(endpoint, once=False, timeout=0.1, interval=0.3)
    assert top.command(None, args, curve=None, out=io.StringIO()) == 1
    assert f"no capflow server answers at {endpoint}" in capsys.readouterr().err


def test_top_live_keeps_trying_when_the_server_goes_and_stops_on_ctrl_c(live, monkeypatch):
    server = live()
    naps = []

    def nap(seconds):
        naps.append(seconds)
        if len(naps) == 1:
            server.stop()  # the view was up: it keeps trying
        if len(naps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(top, "_sleep", nap)
    out = io.StringIO()
    args = _args(server.endpoint, once=False, timeout=0.1, interval=0.3)
    assert top.command(server.config, args, curve=None, out=out) == 0
    assert len(naps) == 3  # one refresh with an answer, two without
    assert "no answer" in out.getvalue()  # the last frame


def test_top_of_an_idle_server_shows_no_requests_of_its_own(live):
    """The view's own polling (system.metrics, system.health, profile.list, a
    profile.get per profile) is not the server's load: an idle server shows 0."""
    server = live()
    with Client(server.endpoint, timeout_s=5, retries=0) as c:
        c.profile_create("alpha", "1000")
        c.profile_create("beta", "2000")
    out = io.StringIO()
    assert top.command(server.config, _args(server.endpoint), curve=None, out=out) == 0
    text = out.getvalue()
    header = next(line for line in text.splitlines() if "req/s" in line)
    assert " 0.0 req/s" in header, text
    cells = [[c.strip() for c in line.split("\u2502")[1:-1]] for line in text.splitlines()]
    rows = {row[0]: row for row in cells if row}
    for op in ("system.metrics", "system.health", "profile.list", "profile.get"):
        assert rows[op][1] == "0.0", (op, text)  # req/s over the window
    assert "profile.create" in rows  # counted since the start, none in the window
    assert "not counting this view's own" in text
