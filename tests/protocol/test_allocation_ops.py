"""The allocation ops through the wire: raw msgpack frames on a DEALER socket, a real
server over a real System. Every figure below is computed by hand in a comment.

The formula (actors/allocation.py), with the defaults of ``[allocation]``::

    confidence < 69  -> reserved_cash_pct = 0.60 (the fallback)
    else base = 0.70 - score / 100 * 0.50 (+ 0.10 risk-off) + min(volatility / 100, 0.10)
    reserved_cash  = cash * pct (rounded up to the cent)
    max_investable = cash - cash * pct - reservations - open orders (rounded down),
                     capped by the account's free cash, the concentration limits
                     (max_ticker 0.10 of equity by default) and the ledger's available

Each test passes its own ``allocation`` section, so the real formula applies (not the
open policy tests/conftest.py sets for the ledger's own mechanics).
"""

from __future__ import annotations

import time

import msgpack
import zmq

from capflow.actors.model.clock import ManualClock

from .replies import error, ok

#: static liquidity: score 72, volatility 18.5, confidence 80 (>= 69: trusted);
#: base 0.70 - 72 / 100 * 0.50 = 0.70 - 0.36 = 0.3400, volatility 18.5 / 100 = 0.185,
#: capped at 0.10 -> reserved_cash_pct 0.44; no ticker limit (max_ticker 1)
STATIC = {"liquidity": {"score": "72", "volatility": "18.5", "confidence": "80"},
          "max_ticker": "1"}
DECISION_KEYS = {"profile_id", "symbol", "currency", "max_investable", "reserved_cash_pct",
                 "reserved_cash", "constraints", "account_id", "concentration",
                 "limited_by", "used_fallback", "liquidity", "min_order_notional",
                 "reasoning"}
SETTINGS = {"taker_fee": "0.001", "maker_fee": "0.0005", "slippage_bps": "0"}


def quote(r, profile_id="p", symbol="BTCUSDT", **more) -> dict:
    return r.request("allocation.quote", {"profile_id": profile_id, "symbol": symbol,
                                          **more})


def reserve(r, amount, key, profile_id="p", symbol="BTCUSDT", **more) -> dict:
    return r.request("allocation.reserve", {"profile_id": profile_id, "symbol": symbol,
                                            "amount": amount, "client_request_id": key,
                                            **more})


def release(r, reservation_id, profile_id="p") -> dict:
    return r.request("allocation.release", {"profile_id": profile_id,
                                            "reservation_id": reservation_id})


def ledger(r, profile_id="p") -> dict:
    return ok(r.request("ledger.get", {"profile_id": profile_id}))


def create(r, profile_id, allocated) -> dict:
    return r.request("profile.create", {"profile_id": profile_id, "allocated": allocated})


def transfer(r, op, profile_id, amount, key) -> dict:
    return r.request(op, {"profile_id": profile_id, "amount": amount,
                          "client_request_id": key})


# -- allocation.quote ---------------------------------------------------------------------

def test_quote_has_the_contract_fields_and_the_hand_computed_figures(live, raw):
    server = live(allocation=STATIC)
    r = raw(server.endpoint)
    ok(create(r, "p", "5000"))

    q = ok(quote(r, market="sim", price_hint="65000"))  # accepted, not used
    assert set(q) == DECISION_KEYS
    # cash 5000.00; reserved 5000 * 0.44 = 2200.00; 5000 - 2200 = 2800.00; the account's
    # free cash (1000000) and the ticker limit (1 * 5000) do not bind
    assert (q["max_investable"], q["reserved_cash_pct"], q["reserved_cash"]) == (
        "2800.00", "0.44", "2200.00")
    assert q["constraints"] == {"cash": "5000.00", "open_orders": "0.00",
                                "reservations": "0.00", "account_cash": "1000000.00",
                                "ledger_available": "5000.00"}
    assert q["concentration"] == {"ticker": {"key": "BTCUSDT", "limit": "5000.00",
                                             "invested": "0.00", "residual": "5000.00"}}
    assert (q["limited_by"], q["used_fallback"], q["min_order_notional"]) == ([], False, "50")
    assert q["liquidity"] == {"score": "72", "risk_regime": "NORMAL", "volatility": "18.5",
                              "confidence": "80", "source": "static"}
    assert (q["profile_id"], q["symbol"], q["currency"], q["account_id"]) == (
        "p", "BTCUSDT", "USDT", "paper")
    assert q["reasoning"] and all(isinstance(line, str) for line in q["reasoning"])
    assert "max_investable = cash 5000.00 - reserved 2200.00 (0.44) - reservations " \
           "0.00 - open orders 0.00 = 2800.00" in q["reasoning"]

    # a static provider takes no pushed signal
    details = error(r.request("liquidity.set", {"score": 50}), "CONFLICT")
    assert details == {"provider": "static"}
    assert ok(quote(r))["max_investable"] == "2800.00"


def test_pushed_liquidity_changes_the_next_quote(live, raw):
    server = live(allocation={"liquidity": {"provider": "push"}, "max_ticker": "1"})
    r = raw(server.endpoint)
    ok(create(r, "p", "10000"))

    # nothing pushed yet: confidence 0, the fallback 0.60: 10000 - 6000.00 = 4000.00
    q = ok(quote(r))
    assert (q["used_fallback"], q["reserved_cash_pct"], q["reserved_cash"],
            q["max_investable"], q["liquidity"]) == (True, "0.60", "6000.00", "4000.00", None)

    # for every symbol: score 80, confidence 90 -> 0.70 - 0.8 * 0.50 = 0.300 (the int 80
    # over 100 is 0.8: one place fewer than "72" / 100 = 0.72 above); 10000 - 3000.00
    pushed = ok(r.request("liquidity.set", {"score": 80, "confidence": "90"}))
    assert pushed["symbol"] == "*"
    assert pushed["signal"] == pushed["effective"] == {
        "score": "80", "risk_regime": "NORMAL", "volatility": "0", "confidence": "90",
        "source": "push"}
    q = ok(quote(r))
    assert (q["used_fallback"], q["reserved_cash_pct"], q["reserved_cash"],
            q["max_investable"], q["liquidity"]["source"]) == (
        False, "0.30", "3000.00", "7000.00", "push")

    # BTCUSDT only: score 0, risk off -> 0.70 - 0 + 0.10 = 0.80; 10000 - 8000.00 = 2000.00
    ok(r.request("liquidity.set", {"symbol": "BTCUSDT", "score": "0",
                                   "risk_regime": "risk_off"}))
    q = ok(quote(r))
    assert (q["reserved_cash_pct"], q["max_investable"], q["liquidity"]["risk_regime"]) == (
        "0.80", "2000.00", "RISK_OFF")
    assert ok(quote(r, symbol="ETHUSDT"))["max_investable"] == "7000.00"  # still "*"

    # confidence 50 < 69: the signal is not trusted, the fallback applies again
    ok(r.request("liquidity.set", {"symbol": "BTCUSDT", "score": 90, "confidence": 50}))
    q = ok(quote(r))
    assert (q["used_fallback"], q["reserved_cash_pct"], q["max_investable"]) == (
        True, "0.60", "4000.00")

    for args, field in [({"score": 101}, "score"), ({"score": "-1"}, "score"),
                        ({"score": "abc"}, "score"), ({"score": 50, "confidence": 101},
                                                      "confidence"),
                        ({}, "score"), ({"score": 50, "risk_regime": ""}, "risk_regime"),
                        ({"score": 50, "bogus": 1}, "bogus")]:
        details = error(r.request("liquidity.set", args), "INVALID_ARGUMENT")
        assert details["field"] == field, (args, details)
    # the refused signals changed nothing
    assert ok(quote(r, symbol="ETHUSDT"))["reserved_cash_pct"] == "0.30"


def test_quote_below_the_minimum_order_notional_is_insufficient_capital(live, raw):
    server = live(allocation={})  # the defaults: no liquidity signal, max_ticker 0.10
    r = raw(server.endpoint)
    ok(create(r, "p", "50"))

    # cash 50.00, fallback 0.60 -> 30.00 kept, 20.00 left; ticker limit 0.10 * 50 = 5.00
    # binds -> 5.00 < 50 (min_order_notional)
    details = error(quote(r), "INSUFFICIENT_CAPITAL")
    assert (details["available"], details["requested"]) == ("5.00", "50")
    decision = details["decision"]
    assert set(decision) == DECISION_KEYS
    assert (decision["max_investable"], decision["reserved_cash_pct"],
            decision["reserved_cash"], decision["limited_by"], decision["used_fallback"]) == (
        "5.00", "0.60", "30.00", ["MAX_TICKER"], True)
    assert decision["reasoning"][-1] == "5.00 is below the minimum order notional 50"

    # a reservation that fits in 5.00 is still refused: the decision is too small
    details = error(reserve(r, "5", "k1"), "INSUFFICIENT_CAPITAL")
    assert (details["available"], details["requested"]) == ("5.00", "5.00")
    assert details["decision"]["max_investable"] == "5.00"
    assert ledger(r)["held"] == "0.00"


def test_quote_of_an_unknown_profile_or_with_bad_arguments(live, raw):
    server = live(allocation={})
    r = raw(server.endpoint)
    ok(create(r, "p", "1000"))
    for op in ("allocation.quote", "allocation.reserve"):
        args = {"profile_id": "ghost", "symbol": "BTCUSDT"}
        if op == "allocation.reserve":
            args.update(amount="10", client_request_id="k")
        details = error(r.request(op, args), "NOT_FOUND")
        assert (details["kind"], details["id"]) == ("profile", "ghost")
    details = error(release(r, "rsv_x", profile_id="ghost"), "NOT_FOUND")
    assert details["kind"] == "profile"

    cases = [({"bogus": 1}, "bogus"), ({"symbol": ""}, "symbol"), ({"symbol": 5}, "symbol"),
             ({"symbol": "x" * 65}, "symbol"), ({"profile_id": ""}, "profile_id")]
    for extra, field in cases:
        details = error(quote(r, **extra), "INVALID_ARGUMENT")
        assert details["field"] == field, (extra, details)
    details = error(r.request("allocation.quote", {"profile_id": "p"}), "INVALID_ARGUMENT")
    assert details["field"] == "symbol"
    for amount in ("0", "-1", "1.001", "abc", float("nan")):  # USDT has 2 places
        details = error(reserve(r, amount, "k"), "INVALID_ARGUMENT")
        assert details["field"] == "amount", amount
    assert error(reserve(r, "10", "k", ttl_s=0), "INVALID_ARGUMENT")["field"] == "ttl_s"
    assert ledger(r)["held"] == "0.00"


# -- allocation.reserve / allocation.release ----------------------------------------------

def test_reserve_is_capped_by_the_quote_and_idempotent(live, raw):
    server = live(allocation=STATIC)
    r = raw(server.endpoint)
    ok(create(r, "p", "5000"))
    assert ok(quote(r))["max_investable"] == "2800.00"  # see the test above

    # two reservations of 2000 sent back to back: the profile's actor decides and holds
    # in one step, so the second sees 2800.00 - 2000.00 = 800.00 and is refused
    for key in ("c1", "c2"):
        r.send_bytes(msgpack.packb({"v": 1, "id": key, "op": "allocation.reserve", "args": {
            "profile_id": "p", "symbol": "BTCUSDT", "amount": "2000", "client_request_id": key}}))
    won, lost = sorted((r.recv(), r.recv()), key=lambda reply: not reply["ok"])
    first_rid = ok(won)["reservation_id"]
    details = error(lost, "INSUFFICIENT_CAPITAL")
    assert (details["available"], details["requested"]) == ("800.00", "2000.00")
    ok(release(r, first_rid))

    details = error(reserve(r, "2800.01", "big"), "INSUFFICIENT_CAPITAL")
    assert (details["available"], details["requested"]) == ("2800.00", "2800.01")
    assert details["decision"]["max_investable"] == "2800.00"
    assert ledger(r)["held"] == "0.00"

    first = ok(reserve(r, "1000", "k1", ttl_s=60))
    assert (first["amount"], first["status"], first["reused"], first["client_request_id"],
            first["symbol"]) == ("1000.00", "ACTIVE", False, "k1", "BTCUSDT")
    rid = first["reservation_id"]
    again = ok(reserve(r, "1000.00", "k1", ttl_s=60))
    assert (again["reservation_id"], again["reused"]) == (rid, True)
    assert {k: v for k, v in again.items() if k != "reused"} == {
        k: v for k, v in first.items() if k != "reused"}
    for other in ({"amount": "1001"}, {"ttl_s": 61}, {"symbol": "ETHUSDT"}):
        args = {"amount": "1000", "ttl_s": 60, **other}
        details = error(reserve(r, key="k1", **args), "CONFLICT")
        assert details == {"client_request_id": "k1", "reservation_id": rid}, other
    led = ledger(r)
    assert (led["held"], led["available"]) == ("1000.00", "4000.00")

    # 5000 - 2200.00 - 1000.00 held = 1800.00; the ticker counts the reservation
    q = ok(quote(r))
    assert (q["max_investable"], q["constraints"]["reservations"]) == ("1800.00", "1000.00")
    assert q["concentration"]["ticker"]["invested"] == "1000.00"
    details = error(reserve(r, "1800.01", "k2"), "INSUFFICIENT_CAPITAL")
    assert details["available"] == "1800.00"
    # exactly what is left fits; then nothing is left: 0.00 < 50
    ok(reserve(r, "1800", "k2"))
    assert error(quote(r), "INSUFFICIENT_CAPITAL")["available"] == "0.00"

    out = ok(release(r, rid))
    assert out == {"released": True, "reservation_id": rid, "amount": "1000.00"}
    details = error(release(r, rid), "NOT_FOUND")
    assert (details["kind"], details["id"]) == ("reservation", rid)
    # 5000 - 2200.00 - 1800.00 = 1000.00
    assert ok(quote(r))["max_investable"] == "1000.00"
    assert ledger(r)["held"] == "1800.00"
    # the key still names the released reservation
    assert ok(reserve(r, "1000", "k1", ttl_s=60))["status"] == "RELEASED"


# -- the account's cash, divided among its profiles ---------------------------------------

def test_account_cash_is_divided_among_its_profiles(live, raw):
    server = live(allocation={}, brokers={"accounts": {"paper": {"initial_cash": "10000"}}})
    r = raw(server.endpoint)
    ok(create(r, "a", "6000"))
    # 10000 - 6000 = 4000 left on the account
    details = error(create(r, "b", "5000"), "INSUFFICIENT_CAPITAL")
    assert details == {"available": "4000.00", "requested": "5000.00", "account_id": "paper"}
    assert error(r.request("profile.get", {"profile_id": "b"}), "NOT_FOUND")["kind"] == (
        "profile")
    ok(create(r, "b", "4000"))

    for pid in ("a", "b"):
        details = error(transfer(r, "ledger.deposit", pid, "1", f"d-{pid}"),
                        "INSUFFICIENT_CAPITAL")
        assert (details["available"], details["requested"]) == ("0.00", "1.00"), pid
    assert (ledger(r, "a")["allocated"], ledger(r, "b")["allocated"]) == ("6000.00", "4000.00")

    # a gives 500 back to the account; b takes it
    assert ok(transfer(r, "ledger.withdraw", "a", "500", "w1"))["allocated"] == "5500.00"
    assert ok(transfer(r, "ledger.deposit", "b", "500", "d1"))["allocated"] == "4500.00"
    details = error(transfer(r, "ledger.deposit", "a", "0.01", "d2"), "INSUFFICIENT_CAPITAL")
    assert details["available"] == "0.00"


def test_a_repeated_deposit_is_reused_when_the_account_is_fully_allocated(live, raw):
    server = live(allocation={}, brokers={"accounts": {"paper": {"initial_cash": "10000"}}})
    r = raw(server.endpoint)
    ok(create(r, "a", "9000"))
    # 10000 - 9000 = 1000 left: the deposit takes all of it
    first = ok(transfer(r, "ledger.deposit", "a", "1000", "d1"))
    assert (first["allocated"], first["reused"]) == ("10000.00", False)
    # the same key and content (a retry with a new request id): the first result
    again = ok(transfer(r, "ledger.deposit", "a", "1000", "d1"))
    assert (again["transfer_id"], again["allocated"], again["reused"]) == (
        first["transfer_id"], "10000.00", True)


# -- an order consumes a reservation ------------------------------------------------------

def test_an_order_consumes_its_reservation(live, raw):
    server = live(allocation={"max_ticker": "1"},
                  brokers={"accounts": {"paper": {"settings": SETTINGS}}})
    r = raw(server.endpoint)
    ok(create(r, "p", "1000"))
    # fallback 0.60: 1000 - 600.00 = 400.00
    assert ok(quote(r, symbol="TESTUSDT"))["max_investable"] == "400.00"
    rid = ok(reserve(r, "200", "k1", symbol="TESTUSDT"))["reservation_id"]
    led = ledger(r)
    assert (led["held"], led["available"]) == ("200.00", "800.00")

    order = {"profile_id": "p", "client_order_id": "o1", "symbol": "TESTUSDT",
             "side": "BUY", "type": "LIMIT", "qty": "2", "price": "90"}
    # a reservation for another symbol cannot pay for this order
    other = ok(reserve(r, "100", "k2", symbol="OTHERUSDT"))["reservation_id"]
    details = error(r.request("order.submit", {**order, "client_order_id": "o0",
                                               "reservation_id": other}), "CONFLICT")
    assert details == {"reservation_id": other}
    ok(release(r, other))

    # LIMIT 2 @ 90 reserves 2 * 90 * (1 + 0.05 % maker fee) = 180.09, out of the 200 held
    placed = ok(r.request("order.submit", {**order, "reservation_id": rid}))
    assert (placed["status"], placed["reserved"], placed["reservation_id"]) == (
        "OPEN", "180.09", rid)
    # the hold is gone; the 19.91 it held beyond the order is available again:
    # 1000 - 180.09 = 819.91
    led = ledger(r)
    assert (led["held"], led["reserved_for_orders"], led["available"]) == (
        "0.00", "180.09", "819.91")
    details = error(release(r, rid), "NOT_FOUND")
    assert (details["kind"], details["id"]) == ("reservation", rid)
    assert ok(reserve(r, "200", "k1", symbol="TESTUSDT"))["status"] == "CONSUMED"
    # the open order counts: 1000 - 600.00 - 180.09 = 219.91
    q = ok(quote(r, symbol="TESTUSDT"))
    assert (q["max_investable"], q["constraints"]["open_orders"],
            q["constraints"]["reservations"]) == ("219.91", "180.09", "0.00")
    # a consumed reservation cannot pay for a second order
    details = error(r.request("order.submit", {**order, "client_order_id": "o2",
                                               "reservation_id": rid}), "NOT_FOUND")
    assert details["kind"] == "reservation"


# -- expiry ---------------------------------------------------------------------------------

def test_a_reservation_expires_on_the_ledgers_timer_with_an_event(live, raw):
    clock = ManualClock()  # 2026-01-05T12:00:00+00:00
    server = live(allocation=STATIC, clock=clock)
    r = raw(server.endpoint)
    ok(create(r, "p", "5000"))
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    try:
        sub.connect(server.events_endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, b"reservation.p")
        time.sleep(0.3)  # a SUB socket misses what is published before it joined

        res = ok(reserve(r, "100", "k1", ttl_s=5))
        assert (res["created_at"], res["expires_at"]) == (
            "2026-01-05T12:00:00.000000+00:00", "2026-01-05T12:00:05.000000+00:00")
        clock.advance(4)
        time.sleep(0.3)
        assert ledger(r)["held"] == "100.00"  # not due yet
        clock.advance(1)  # 12:00:05: due; the timer thread looks at least once a second

        seen: list[tuple[bytes, dict]] = []
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline and not any(
                b["type"] == "ReservationExpired" for _, b in seen):
            if sub.poll(100):
                topic, body = sub.recv_multipart()
                seen.append((topic, msgpack.unpackb(body, raw=False)))
        assert [t for t, _ in seen] == [b"reservation.p"] * 2, seen
        assert [b["type"] for _, b in seen] == ["CapitalReserved", "ReservationExpired"]
        assert [b["seq"] for _, b in seen] == [1, 2]
        expired = seen[1][1]
        assert (expired["profile_id"], expired["ts"], expired["causation_id"]) == (
            "p", "2026-01-05T12:00:05.000000+00:00", "timer")
        assert (expired["reservation"]["reservation_id"], expired["reservation"]["status"],
                expired["reservation"]["amount"]) == (res["reservation_id"], "EXPIRED",
                                                      "100.00")
    finally:
        sub.close(0)
        ctx.term()
    led = ledger(r)
    assert (led["held"], led["available"]) == ("0.00", "5000.00")
    details = error(release(r, res["reservation_id"]), "NOT_FOUND")
    assert details["kind"] == "reservation"
    assert ok(reserve(r, "100", "k1", ttl_s=5))["status"] == "EXPIRED"
