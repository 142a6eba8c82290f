"""Black box: raw msgpack frames over a real socket, no client library. Every error code
of the contract that the landed ops can produce is reached here (FORBIDDEN and the
unauthenticated "no answer" are in test_curve.py)."""

from __future__ import annotations

import threading
import time

import msgpack
import pytest
from sqlalchemy import func, select

from capflow.actors.model.errors import CODES
from capflow.storage import schema as s


def _error(reply: dict) -> dict:
    assert reply["v"] == 1 and reply["ok"] is False, reply
    assert reply["error"]["code"] in CODES
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
    return reply["error"]


@pytest.fixture
def wire(live, raw):
    server = live()
    r = raw(server.endpoint)
    assert r.request("profile.create", {"profile_id": "alpha", "allocated": "1000"})["ok"]
    return server, r


def test_ok_replies_carry_decimal_strings_and_iso_timestamps(wire):
    _server, r = wire
    reply = r.request("allocation.reserve", {"profile_id": "alpha", "symbol": "BTCUSDT",
                                             "amount": 0.1, "client_request_id": "k",
                                             "ttl_s": 60})
    assert reply["ok"] is True and reply["v"] == 1
    res = reply["result"]
    assert res["amount"] == "0.10"  # a float is read through its shortest repr
    assert res["expires_at"].endswith("+00:00") and "T" in res["expires_at"]
    led = r.request("ledger.get", {"profile_id": "alpha"})["result"]
    assert (led["held"], led["available"]) == ("0.10", "999.90")


@pytest.mark.parametrize("payload", [b"", b"\xc1", b"not msgpack at all",
                                     msgpack.packb([1, 2, 3]), msgpack.packb("x"),
                                     msgpack.packb({"v": 1, "op": "system.health"}),
                                     msgpack.packb({"v": 1, "id": "", "op": "system.health"}),
                                     msgpack.packb({"v": "1", "id": "a", "op": "x"}),
                                     msgpack.packb({"v": 1, "id": 7, "op": "x"}),
                                     msgpack.packb({"v": 1, "id": "a", "op": 5}),
                                     msgpack.packb({"v": 1, "id": "a", "op": "x", "args": []}),
                                     msgpack.packb({"v": 1, "id": "a", "op": "x", "zz": 1})])
def test_malformed_requests_are_bad_request(wire, payload):
    _server, r = wire
    r.send_bytes(payload)
    err = _error(r.recv())
    assert err["code"] == "BAD_REQUEST"


def test_bad_request_echoes_the_id_when_it_could_be_read(wire):
    _server, r = wire
    r.send_bytes(msgpack.packb({"v": 1, "id": "abc", "op": 5}))
    reply = r.recv()
    assert reply["id"] == "abc" and _error(reply)["code"] == "BAD_REQUEST"


def test_unsupported_version_lists_the_supported_ones(wire):
    _server, r = wire
    reply = r.request("system.health", v=2)
    err = _error(reply)
    assert err["code"] == "UNSUPPORTED_VERSION" and err["details"]["supported"] == [1]


def test_unknown_op(wire):
    _server, r = wire
    assert _error(r.request("allocation.forecast", {"profile_id": "alpha"}))["code"] == (
        "UNKNOWN_OP")


@pytest.mark.parametrize("args, field", [
    ({"symbol": "X", "amount": "1", "client_request_id": "k"}, "profile_id"),
    ({"profile_id": "alpha", "symbol": "X", "amount": "1", "client_request_id": "k",
      "amout": 1}, "amout"),
    ({"profile_id": "alpha", "symbol": 5, "amount": "1", "client_request_id": "k"}, "symbol"),
    ({"profile_id": "alpha", "symbol": "X", "amount": float("nan"),
      "client_request_id": "k"}, "amount"),
    ({"profile_id": "alpha", "symbol": "X", "amount": "-5", "client_request_id": "k"},
     "amount"),
    ({"profile_id": "alpha", "symbol": "X", "amount": "1234567890.123456789",
      "client_request_id": "k"}, "amount"),
    ({"profile_id": "alpha", "symbol": "X", "amount": "1.005", "client_request_id": "k"},
     "amount"),
    ({"profile_id": "alpha", "symbol": "X", "amount": 2**64 - 1, "client_request_id": "k"},
     "amount"),
    ({"profile_id": "alpha", "symbol": "X", "amount": True, "client_request_id": "k"},
     "amount"),
    ({"profile_id": "alpha", "symbol": "X", "amount": "1", "client_request_id": "k",
      "ttl_s": 0}, "ttl_s"),
    ({"profile_id": "a" * 129, "symbol": "X", "amount": "1", "client_request_id": "k"},
     "profile_id"),
])
def test_invalid_arguments_name_the_field(wire, args, field):
    _server, r = wire
    err = _error(r.request("allocation.reserve", args))
    assert err["code"] == "INVALID_ARGUMENT" and err["details"]["field"] == field
    assert r.request("ledger.get", {"profile_id": "alpha"})["result"]["held"] == "0.00"


def test_not_found_names_the_kind(wire):
    _server, r = wire
    err = _error(r.request("ledger.get", {"profile_id": "ghost"}))
    assert (err["code"], err["details"]["kind"]) == ("NOT_FOUND", "profile")
    err = _error(r.request("allocation.release", {"profile_id": "alpha",
                                                  "reservation_id": "rsv_nope"}))
    assert (err["code"], err["details"]["kind"]) == ("NOT_FOUND", "reservation")


def test_idempotency_key_with_other_content_is_conflict(wire):
    _server, r = wire
    base = {"profile_id": "alpha", "symbol": "X", "client_request_id": "same"}
    first = r.request("allocation.reserve", {**base, "amount": "10"})["result"]
    again = r.request("allocation.reserve", {**base, "amount": "10"})["result"]
    assert again["reused"] is True and again["reservation_id"] == first["reservation_id"]
    assert _error(r.request("allocation.reserve", {**base, "amount": "11"}))["code"] == (
        "CONFLICT")
    err = _error(r.request("profile.create", {"profile_id": "alpha", "allocated": "1",
                                              "currency": "EUR"}))
    assert err["code"] == "CONFLICT"


def test_insufficient_capital_has_available_and_requested(wire):
    _server, r = wire
    err = _error(r.request("allocation.reserve", {"profile_id": "alpha", "symbol": "X",
                                                  "amount": "1000.01",
                                                  "client_request_id": "big"}))
    assert err["code"] == "INSUFFICIENT_CAPITAL"
    assert err["details"] == {"available": "1000.00", "requested": "1000.01"}
    err = _error(r.request("ledger.withdraw", {"profile_id": "alpha", "amount": "5000",
                                               "client_request_id": "w"}))
    assert err["code"] == "INSUFFICIENT_CAPITAL"


@pytest.mark.parametrize("state, reason", [("REDUCE_ONLY", "REDUCE_ONLY"),
                                           ("HALTED", "TRADING_HALTED")])
def test_risk_rejected_when_the_profile_takes_no_new_exposure(wire, state, reason):
    _server, r = wire
    prof = r.request("profile.set_state", {"profile_id": "alpha", "state": state,
                                           "reason": "test"})["result"]
    assert (prof["state"], prof["state_reason"], prof["state_by"]) == (state, "test", "wire")
    err = _error(r.request("allocation.reserve", {"profile_id": "alpha", "symbol": "X",
                                                  "amount": "1", "client_request_id": "k"}))
    assert err["code"] == "RISK_REJECTED" and err["details"]["reason"] == reason
    assert {"limit", "value"} <= set(err["details"])


def test_rate_limited_past_the_budget(live, raw):
    server = live(server={"rate_limit_per_s": 5})
    r = raw(server.endpoint)
    codes = [r.request("system.health").get("error", {}).get("code") for _ in range(30)]
    assert codes[:10] == [None] * 10  # the burst allowance (2 s worth)
    assert "RATE_LIMITED" in codes[10:]


def test_timeout_then_the_retry_gets_the_real_answer(live, raw):
    server = live(server={"request_timeout_s": 0.3})
    system = server.system
    r = raw(server.endpoint)
    assert r.request("profile.create", {"profile_id": "slow", "allocated": "100"})["ok"]
    real_submit = system.allocation.to_ledger

    def slow_submit(pid, cmd, callback=None):  # answers 0.8 s late
        def later(reply):
            threading.Timer(0.8, callback, args=(reply,)).start()
        return real_submit(pid, cmd, later if callback else None)

    system.allocation.to_ledger = slow_submit
    req = {"v": 1, "id": "slow-1", "op": "allocation.reserve",
           "args": {"profile_id": "slow", "symbol": "X", "amount": "7",
                    "client_request_id": "k"}}
    r.send_bytes(msgpack.packb(req))
    err = _error(r.recv())
    assert err["code"] == "TIMEOUT"
    # the late real answer goes to the cache, not unasked to the client
    assert r.recv(timeout_ms=1200) is None
    system.allocation.to_ledger = real_submit
    r.send_bytes(msgpack.packb(req))  # the same bytes: answered from the cache
    reply = r.recv()
    assert reply["ok"] is True and reply["result"]["amount"] == "7.00"
    with system.engine.connect() as c:
        n = c.execute(select(func.count()).select_from(s.reservations)
                      .where(s.reservations.c.profile_id == "slow")).scalar()
    assert n == 1


def test_unavailable_while_shutting_down(wire):
    server, r = wire
    server._stopping = True  # what stop() sets first, before draining
    try:
        assert _error(r.request("ledger.get", {"profile_id": "alpha"}))["code"] == (
            "UNAVAILABLE")
    finally:
        server._stopping = False


def test_internal_error_says_nothing_secret_and_the_server_lives_on(wire, monkeypatch):
    from capflow.protocol import ops
    from capflow.protocol.profile_ops import ProfileArgs

    _server, r = wire

    def broken(ctx, args, caller, done):
        raise RuntimeError("password=hunter2 at /secret/path")

    monkeypatch.setitem(ops.OPS, "ledger.get", (ProfileArgs, broken))
    err = _error(r.request("ledger.get", {"profile_id": "alpha"}))
    assert err["code"] == "INTERNAL" and "hunter2" not in err["message"]
    monkeypatch.undo()
    assert r.request("system.health")["result"]["status"] == "ok"


def test_a_repeated_id_is_answered_once_and_executed_once(wire):
    server, r = wire
    req = msgpack.packb({"v": 1, "id": "dup-1", "op": "allocation.reserve",
                         "args": {"profile_id": "alpha", "symbol": "X", "amount": "3",
                                  "client_request_id": "dup-key"}})
    r.send_bytes(req)
    r.send_bytes(req)  # while the first may still be running
    a, b = r.recv(), r.recv()
    assert a == b and a["ok"] is True
    assert r.recv(timeout_ms=200) is None  # exactly one answer per request
    r.send_bytes(req)
    assert r.recv() == a
    led = r.request("ledger.get", {"profile_id": "alpha"})["result"]
    assert led["held"] == "3.00"
    with server.system.engine.connect() as c:
        n = c.execute(select(func.count()).select_from(s.ledger_journal)
                      .where(s.ledger_journal.c.type == "CapitalReserved")).scalar()
    assert n == 1


def test_events_have_a_per_topic_sequence(wire):
    import zmq

    server, r = wire
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(server.events_endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"reservation.alpha")
    time.sleep(0.3)  # a SUB socket misses what is published before it joined
    rid = r.request("allocation.reserve", {"profile_id": "alpha", "symbol": "X",
                                           "amount": "2", "client_request_id": "e1"}
                    )["result"]["reservation_id"]
    r.request("allocation.release", {"profile_id": "alpha", "reservation_id": rid})
    got = []
    while len(got) < 2 and sub.poll(3000):
        topic, body = sub.recv_multipart()
        got.append((topic, msgpack.unpackb(body, raw=False)))
    sub.close(0)
    ctx.term()
    assert [t for t, _ in got] == [b"reservation.alpha"] * 2
    assert [b["type"] for _, b in got] == ["CapitalReserved", "ReservationReleased"]
    assert [b["seq"] for _, b in got] == [1, 2]
    assert got[1][1]["reservation"]["reservation_id"] == rid
    assert got[0][1]["causation_id"] == "e1" and got[0][1]["ts"].endswith("+00:00")


def test_an_unknown_trading_state_is_invalid_and_changes_nothing(wire):
    _server, r = wire
    err = _error(r.request("profile.set_state", {"profile_id": "alpha", "state": "PAUSED"}))
    assert err["code"] == "INVALID_ARGUMENT" and err["details"]["field"] == "state"
    assert r.request("profile.get", {"profile_id": "alpha"})["result"]["state"] == "ACTIVE"
