"""Limits that hold under a burst: many clients, each on its own socket and thread,
send `signal.submit` at the same instant through the wire.

Per profile, the checks run inside the profile's ledger actor together with the capital
reservation; across an account's profiles, the account manager owns the count. Either
way exactly `limit` orders get through, every other signal is answered
``risk_ok: false`` with the reason, and every one is answered fast.
"""

from __future__ import annotations

import threading
import time
import uuid

import msgpack
import zmq

from .replies import ok
from .test_trading_ops import TS

N = 50
LIMIT = 5


def burst(endpoint: str, requests: list[tuple[str, dict]]) -> list[tuple[dict, float]]:
    """Send every request from its own thread and DEALER socket, all released by one
    barrier; (reply, seconds from the release to the reply) per request."""
    ctx = zmq.Context()
    socks = []
    for _ in requests:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        socks.append(s)
    # every socket connected before the release: a warm-up round trip each
    for s in socks:
        s.send_multipart([b"", msgpack.packb({"v": 1, "id": uuid.uuid4().hex,
                                              "op": "system.health", "args": {}})])
    for s in socks:
        assert s.poll(5000), "no answer to the warm-up"
        s.recv_multipart()
    gate = threading.Barrier(len(requests) + 1)
    out: list = [None] * len(requests)
    released = [0.0]

    def worker(i: int) -> None:
        op, args = requests[i]
        frame = msgpack.packb({"v": 1, "id": uuid.uuid4().hex, "op": op, "args": args})
        gate.wait()
        socks[i].send_multipart([b"", frame])
        if socks[i].poll(10_000):
            reply = msgpack.unpackb(socks[i].recv_multipart()[-1], raw=False)
            out[i] = (reply, time.monotonic() - released[0])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    released[0] = time.monotonic()
    gate.wait()
    for t in threads:
        t.join(15)
    for s in socks:
        s.close(0)
    ctx.term()
    assert all(o is not None for o in out), "some requests were never answered"
    return out


def _signal(profile_id: str, i: int) -> tuple[str, dict]:
    # qty 1 at 100 reserves 100 * 1.01 * 1.001 = 101.11: capital is never what binds
    return "signal.submit", {"profile_id": profile_id, "symbol": "TESTUSDT", "side": "BUY",
                             "price": "100", "qty": "1", "timestamp": TS,
                             "signal_id": f"{profile_id}-s{i}"}


def _tally(results) -> tuple[list[dict], list[dict], float]:
    answers = [ok(reply) for reply, _ in results]
    opened = [a for a in answers if a["risk_ok"]]
    refused = [a for a in answers if not a["risk_ok"]]
    return opened, refused, max(t for _, t in results)


def _open_positions(r, profile_ids) -> int:
    n = 0
    for pid in profile_ids:
        found = ok(r.request("position.list", {"profile_id": pid, "status": "OPEN"}))
        n += len(found["positions"])
    return n


def test_50_concurrent_signals_for_one_profile_open_exactly_5(market):
    server, r = market(risk={"limits": {"max_open_positions": LIMIT}})
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))

    opened, refused, slowest = _tally(burst(server.endpoint, [_signal("p", i)
                                                              for i in range(N)]))

    assert len(opened) == LIMIT
    assert len(refused) == N - LIMIT
    assert {a["risk_reason"] for a in refused} == {"MAX_OPEN_POSITIONS"}
    assert slowest < 1.0, f"the slowest answer took {slowest:.3f} s"
    # the five orders fill on the next tick and are the only open positions
    server.system.advance(1)
    assert _open_positions(r, ["p"]) == LIMIT
    led = ok(r.request("ledger.get", {"profile_id": "p"}))
    assert led["reserved_for_orders"] == "0.00"
    # every signal is recorded: repeating a refused one answers the refusal
    again = ok(r.request(*_signal("p", N - 1)))
    assert again["reused"] and (again["risk_ok"] or again["risk_reason"] ==
                                "MAX_OPEN_POSITIONS")


def test_50_concurrent_signals_across_5_profiles_hold_the_account_wide_limit(market):
    server, r = market(risk={"accounts": {"paper": {"max_open_positions": LIMIT}}})
    profiles = [f"p{k}" for k in range(5)]
    for pid in profiles:
        ok(r.request("profile.create", {"profile_id": pid, "allocated": "10000"}))

    # ten signals per profile, interleaved, all at once
    requests = [_signal(profiles[i % 5], i) for i in range(N)]
    opened, refused, slowest = _tally(burst(server.endpoint, requests))

    assert len(opened) == LIMIT
    assert len(refused) == N - LIMIT
    assert {a["risk_reason"] for a in refused} == {"MAX_OPEN_POSITIONS"}
    assert slowest < 1.0, f"the slowest answer took {slowest:.3f} s"
    server.system.advance(1)
    assert _open_positions(r, profiles) == LIMIT

    # the slots come back when positions close: close one, and one more entry fits
    pid = next(p for p in profiles
               if ok(r.request("position.list", {"profile_id": p, "status": "OPEN"}
                               ))["positions"])
    pos = ok(r.request("position.list", {"profile_id": pid, "status": "OPEN"}))["positions"][0]
    ok(r.request("position.close", {"profile_id": pid, "position_id": pos["position_id"]}))
    server.system.advance(1)
    assert _open_positions(r, profiles) == LIMIT - 1
    first = ok(r.request(*_signal(profiles[0], 1000)))
    second = ok(r.request(*_signal(profiles[1], 1001)))
    assert first["risk_ok"] and (second["risk_ok"], second["risk_reason"]) == (
        False, "MAX_OPEN_POSITIONS")
