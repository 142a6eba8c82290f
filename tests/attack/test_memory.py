"""What a client can make the server keep: every per-name store that a request fills
must be bounded, as the symbols of the simulator (`[simulator] max_symbols`) and the
smoothing state of the liquidity signal (`actors.liquidity.MAX_STATES`) are."""

from __future__ import annotations

import msgpack

from capflow.actors.liquidity import MAX_STATES, unwrap

#: pushes sent before their answers are read (the DEALER socket's queue stays small)
WINDOW = 500


def test_pushed_liquidity_signals_are_bounded_like_the_smoothing_state(market):
    """With ``provider = "push"`` every `liquidity.set` of a new symbol is kept in a dict
    that nothing ever empties: a symbol is any 1..64 characters, so a client (any
    plain-mode client, or any key granted ``*``) grows the server's memory by a signal
    per request, for as long as it likes (about half a kilobyte each: a million pushes
    are half a gigabyte). The smoothing wrapper of the same signals keeps at most
    `MAX_STATES` symbols for exactly this reason; the store underneath it keeps all.
    Here `MAX_STATES` + 100 distinct symbols are pushed, a bounded loop of about ten
    thousand small requests."""
    server, r = market(allocation={"liquidity": {"provider": "push"}})
    total = MAX_STATES + 100
    sent = answered = 0
    while answered < total:
        while sent < total and sent - answered < WINDOW:
            r.send_bytes(msgpack.packb({"v": 1, "id": f"l{sent}", "op": "liquidity.set",
                                        "args": {"symbol": f"S{sent}", "score": 50}}))
            sent += 1
        reply = r.recv(30_000)
        assert reply is not None and reply["ok"] is True, reply
        answered += 1
    kept = unwrap(server.system.allocation.provider)._signals
    assert len(kept) <= MAX_STATES, f"{len(kept)} pushed signals kept"
