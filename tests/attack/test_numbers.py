"""Numbers and names a hostile or careless client sends, through the wire: what the server
reads as a number must stay a number it can store, answer and compute with, and a name
it reads must be one of the names it documents.

The market is replayed (tests/protocol/market.py): TESTUSDT at 100.00 / 100.20.
"""

from __future__ import annotations

import msgpack

from ..protocol.replies import error, ok

#: the most an answer to one small request should take (the README: "answers stay small
#: whatever the request was"; they are kept for repeats)
SMALL = 64 * 1024


def create(r, allocated: str = "10000", profile_id: str = "p") -> None:
    ok(r.request("profile.create", {"profile_id": profile_id, "allocated": allocated}))


def raw_reply(r, op: str, args: dict) -> bytes:
    """The reply frame itself, to measure it."""
    r.send_bytes(msgpack.packb({"v": 1, "id": "big-1", "op": op, "args": args}))
    assert r.sock.poll(30_000), f"no reply to {op}"
    return r.sock.recv_multipart()[-1]


def test_a_price_with_a_huge_negative_exponent_is_not_stored_and_echoed_in_full(market):
    """`order.submit` reads `price`, `tp_price` and `sl_price` as numbers with no bound
    on their decimal places (only `qty` is checked against the symbol's places), and
    keeps them as given. ``"1e-900000"`` is 10 bytes on the wire, a valid stop below a
    BUY at 100, and is written back in plain notation: a 900,000-digit string in the
    answer, in the stored order row (SQLite binds money as plain text), in the event on
    the PUB socket, and again in every `order.get` / `order.list` of it. A LIMIT price
    of that form costs one cent of capital, so a client can store a thousand of them and
    make one `order.list` a 900 MB answer. (With ``"1e-999999999999999999"`` the write
    itself fails with MemoryError and the client is told UNAVAILABLE: "storage failed,
    retry with the same key".) A stop or a price must be refused when it is not a
    number the symbol's price grid can carry."""
    server, r = market()
    create(r)
    server.system.advance(1)
    frame = raw_reply(r, "order.submit", {
        "profile_id": "p", "client_order_id": "tiny-stop", "symbol": "TESTUSDT",
        "side": "BUY", "type": "LIMIT", "qty": "1", "price": "100.00",
        "sl_price": "1e-900000"})
    assert len(frame) < SMALL, f"a {len(frame)}-byte answer to a 200-byte request"


def test_a_pushed_liquidity_number_cannot_break_every_quote_and_reservation(market):
    """`liquidity.set` reads `score`, `volatility` and `confidence` with `parse_decimal`,
    which admits any exponent as long as the text is under 64 characters. A score of
    ``"1e-999999999999999999"`` is within 0..100, so it is stored as the signal for
    every symbol; the answer then cannot be encoded (INTERNAL), and from then on every
    `allocation.quote` and every `allocation.reserve` of every profile fails INTERNAL:
    the decision writes the score into its reasoning in plain notation, which needs
    10^18 characters (MemoryError), and a failing reservation also makes its ledger
    actor reload itself from storage. One request (any plain-mode client, or any key
    granted ``*``) switches off the allocation service until someone pushes again."""
    _server, r = market(allocation={"liquidity": {"provider": "push"}})
    create(r)
    pushed = r.request("liquidity.set", {"score": "1e-999999999999999999"})
    assert not (pushed["ok"] is False and pushed["error"]["code"] == "INTERNAL"), pushed
    quote = r.request("allocation.quote", {"profile_id": "p", "symbol": "TESTUSDT"})
    assert quote["ok"] is True or quote["error"]["code"] != "INTERNAL", quote
    held = r.request("allocation.reserve", {"profile_id": "p", "symbol": "TESTUSDT",
                                            "amount": "100", "client_request_id": "k1"})
    assert held["ok"] is True or held["error"]["code"] != "INTERNAL", held


def test_a_well_formed_signal_too_large_to_afford_is_a_denial_not_an_error(market):
    """A signal is answered ``ok`` with ``risk_ok: false`` whenever it is well formed
    (section 6.13: "Never INSUFFICIENT_CAPITAL or RISK_REJECTED: those are risk_reasons
    here"), and a denial with a `signal_id` is recorded, final for that id. A signal
    whose quantity is valid (under 10^15, on the symbol's grid) but whose reservation
    would pass 10^15 is instead answered INVALID_ARGUMENT on a field ``amount`` that the
    op does not have (the ledger re-parses its own computed reservation as client
    input), and nothing is recorded, so a repeat is decided again. `risk.check` of the
    same signal says what it should be: INSUFFICIENT_CAPITAL."""
    server, r = market()
    create(r)
    server.system.advance(1)
    args = {"profile_id": "p", "symbol": "TESTUSDT", "side": "BUY", "price": "100",
            "timestamp": "2026-01-05T12:00:00+00:00", "qty": "99999999999999"}
    check = ok(r.request("risk.check", {k: v for k, v in args.items() if k != "timestamp"}))
    assert (check["allowed"], check["reason"]) == (False, "INSUFFICIENT_CAPITAL")
    res = ok(r.request("signal.submit", {**args, "signal_id": "huge-1"}))
    assert (res["risk_ok"], res["risk_reason"]) == (False, "INSUFFICIENT_CAPITAL")


def test_sides_and_order_types_are_ascii_names(market):
    """`side` is documented as ``BUY`` or ``SELL`` (or long / short) "in any case", and
    `type` as ``MARKET`` or ``LIMIT``. Both are read with Python's Unicode `str.upper()`,
    which also maps other letters onto ASCII ones: "short" spelt with a long s (U+017F)
    becomes ``SHORT``, "limit" spelt with dotless i's (U+0131) becomes ``LIMIT``. So
    text that is not one of the names (a homoglyph, a mangled config value) silently
    becomes a trade direction and an order type, where every other name on the wire
    (symbols, states, money) is refused unless it is plain ASCII."""
    server, r = market()
    create(r)
    server.system.advance(1)
    sig = r.request("signal.submit", {"profile_id": "p", "symbol": "TESTUSDT",
                                      "side": "\u017fhort", "price": "100.00",
                                      "timestamp": "2026-01-05T12:00:00+00:00", "qty": "1"})
    assert error(sig, "INVALID_ARGUMENT")["field"] == "side"
    placed = r.request("order.submit", {"profile_id": "p", "client_order_id": "o1",
                                        "symbol": "TESTUSDT", "side": "BUY",
                                        "type": "l\u0131m\u0131t", "qty": "1",
                                        "price": "90"})
    assert error(placed, "INVALID_ARGUMENT")["field"] == "type"
