"""Idempotency keys whose name space is shared with someone else's.

`flatten` under CURVE, where keys are tenants: bot1 is granted only its profile `alpha`,
bot2 every profile (an operator); the `gateway` and `peer` fixtures are those of
tests/protocol/test_curve_peers.py. The idempotency key of `flatten` is one server-wide
name space (docs/protocol.md 6.28), shared by every key.

`signal.submit` and `order.submit` of one profile: a signal's order is recorded under
the client order id ``signal:<signal_id>``, in the same name space as the client order
ids of `order.submit`.
"""

from __future__ import annotations

from ..protocol.replies import ok
from ..protocol.test_curve_peers import GRANTS

assert GRANTS["bot1"] == ["alpha"] and GRANTS["bot2"] == ["*"]


def flatten(p, key: str, **args) -> dict:
    return p.request("flatten", {"client_request_id": key, **args})


def setup(peer):
    operator, tenant = peer("bot2"), peer("bot1")
    for pid in ("alpha", "beta"):
        created = operator.request("profile.create", {"profile_id": pid, "allocated": "1000"})
        assert created["ok"] is True, created
    return operator, tenant


def test_a_flatten_key_tells_nothing_of_profiles_the_caller_may_not_touch(gateway, peer):
    """A client "cannot probe whether a profile it may not touch exists" (section 1):
    every other op answers FORBIDDEN before it looks. But when a key granted only
    `alpha` flattens `alpha` with a key the operator used for `beta` (a predictable one:
    the documentation's own example is ``eod-2026-12-07``), the CONFLICT answer names
    the other flatten's scope and target: ``beta``, a profile it may not touch. And its
    own flatten is not done."""
    operator, tenant = setup(peer)
    assert flatten(operator, "eod-2026-12-07", scope="profile",
                   profile_id="beta")["ok"] is True
    reply = flatten(tenant, "eod-2026-12-07", scope="profile", profile_id="alpha")
    assert "beta" not in repr(reply), reply


def test_a_tenant_cannot_take_the_key_of_the_operators_flatten_all(gateway, peer):
    """The key space is shared by every CURVE key, so a key granted one profile can use
    a key first (its own, harmless flatten of `alpha`), and the operator's flatten of
    everything under that key is then refused with CONFLICT: the kill switch does not
    act, and no profile is halted. Keys must be scoped by caller (or the whole map
    keyed by caller and key), like every other idempotency key, which lives per
    profile."""
    operator, tenant = setup(peer)
    assert flatten(tenant, "eod-2026-12-08", scope="profile",
                   profile_id="alpha")["ok"] is True
    reply = flatten(operator, "eod-2026-12-08", scope="all", reason="end of day")
    assert reply["ok"] is True, reply
    assert reply["result"]["scope"] == "all"
    health = operator.request("system.health")
    assert health["result"]["trading_state"] == "HALTED", health


def test_a_signal_is_never_answered_with_an_order_that_does_not_exist(market):
    """The order of a signal with a `signal_id` is keyed ``signal:<signal_id>`` among the
    profile's client order ids, but `order.submit` does not keep that prefix for the
    server (as ``capflow:`` is kept for transfer and reservation keys). An order placed
    first under ``signal:s1`` with the content the signal will have makes the signal's
    own order a "repeat" of it: nothing new is recorded, yet the signal is answered
    ``risk_ok: true``, ``reused: false``, with an `order_id` and `position_id` freshly
    made for it that name nothing (``order.get``: NOT_FOUND), and that answer is stored
    as the signal's final decision. A bot then follows, closes and counts an order and
    a position that do not exist, while the real order is someone else's."""
    server, r = market()
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "10000"}))
    server.system.advance(1)  # 100.00 / 100.20
    # what the signal below will be: MARKET BUY 1 at 100.20, tp 2 % 102.20, sl 1 % 99.20
    first = r.request("order.submit", {
        "profile_id": "p", "client_order_id": "signal:s1", "symbol": "TESTUSDT",
        "side": "BUY", "type": "MARKET", "qty": "1", "price": "100.20",
        "tp_price": "102.20", "sl_price": "99.20"})
    sig = ok(r.request("signal.submit", {
        "profile_id": "p", "symbol": "TESTUSDT", "side": "BUY", "price": "100.20",
        "timestamp": "2026-01-05T12:00:00+00:00", "qty": "1", "signal_id": "s1",
        "tp_pct": "2", "sl_pct": "1"}))
    if sig["risk_ok"]:
        got = r.request("order.get", {"profile_id": "p", "order_id": sig["order_id"]})
        assert got["ok"] is True, (first, sig, got)
