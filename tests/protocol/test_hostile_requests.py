"""Requests built to cost the server memory, or to be read two ways, over a real socket:
huge names and values are quoted short in every error (and so in the reply cache), the
cache keeps to its byte budgets, a key is refused before its arguments are read when it
names a profile it may not touch, and a map with a key twice is refused.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

import msgpack
import pytest
import zmq

from .replies import error, ok
from .test_curve_peers import (
    Peer,
    keys_dir,  # noqa: F401 -- a fixture
)

#: an error quotes at most this many characters of what a client sent, the last one
#: being CUT when it was cut (docs/protocol.md, section 2)
QUOTE_MAX, CUT = 64, "\u2026"
HUGE = 1_000_000  # characters: a request with one such string stays under the 1 MiB limit
SMALL_ANSWER = 1024


def _frame(rid: str, op: str, args: dict) -> bytes:
    return msgpack.packb({"v": 1, "id": rid, "op": op, "args": args})


def _ask(r, op: str, args: dict, rid: str | None = None) -> tuple[dict, int]:
    """The answer and its size in bytes."""
    r.send_bytes(_frame(rid or uuid.uuid4().hex, op, args))
    assert r.sock.poll(5000), f"no answer to {op}"
    frames = r.sock.recv_multipart()
    return msgpack.unpackb(frames[-1], raw=False), len(frames[-1])


def _quoted(text: str) -> str:
    assert len(text) == QUOTE_MAX and text.endswith(CUT), text
    return text[:-1]


# -- huge names and values are quoted short ---------------------------------------------

def test_huge_names_and_values_get_small_answers_and_the_cache_stays_small(live, raw):
    server = live(server={"dedup_max_bytes": 4 << 20, "dedup_client_max_bytes": 1 << 20})
    r = raw(server.endpoint)
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "1000"}))
    big = "k" * HUGE
    for i in range(40):
        reply, size = _ask(r, "ledger.get", {"profile_id": "p", f"{i}{big}": 1})
        details = error(reply, "INVALID_ARGUMENT")
        assert size < SMALL_ANSWER, size
        assert big.startswith(_quoted(details["field"])[len(str(i)):])
        assert len(reply["error"]["message"]) < 100
    # other places that used to quote what the client sent in full
    cases: list[tuple[str, dict, str]] = [
        ("stats.get", {"group_by": big}, "INVALID_ARGUMENT"),  # msgspec: "Invalid enum value"
        ("risk.reset", {"profile_id": "p", "breakers": [big]}, "INVALID_ARGUMENT"),
        ("ledger.get", {"profile_id": big}, "INVALID_ARGUMENT"),
        ("x" * HUGE, {}, "UNKNOWN_OP"),
    ]
    for op, args, code in cases:
        reply, size = _ask(r, op, args)
        error(reply, code)
        assert size < SMALL_ANSWER, (op, size)
    reply, size = _ask(r, "stats.get", {"group_by": big})
    assert reply["error"]["details"] == {"field": "group_by"}
    assert reply["error"]["message"].endswith(" - at `$.group_by`"), reply
    # unknown envelope keys: one is named (quoted), the others counted
    half = big[:HUGE // 2 - 100]
    r.send_bytes(msgpack.packb({"v": 1, "id": "env-1", "op": "system.health",
                                "a" + half: 1, "b" + half: 2, "c": 3}))
    assert r.sock.poll(5000)
    frames = r.sock.recv_multipart()
    reply = msgpack.unpackb(frames[-1], raw=False)
    error(reply, "BAD_REQUEST")
    assert len(frames[-1]) < SMALL_ANSWER and "(and 2 more)" in reply["error"]["message"]
    # every answer was kept (nothing was evicted) in far less than one huge key
    assert server.cache.evicted == 0 and len(server.cache) >= 45
    assert server.cache.bytes < 100_000, server.cache.bytes


# -- the byte budgets ---------------------------------------------------------------------

def test_one_client_cannot_push_out_the_others_answers(live, raw):
    server = live(server={"dedup_max_bytes": 1 << 20, "dedup_client_max_bytes": 64 << 10})
    first, other = raw(server.endpoint), raw(server.endpoint)
    ok(first.request("profile.create", {"profile_id": "p", "allocated": "1000"}))
    deposit = {"profile_id": "p", "amount": "1", "client_request_id": "dep-1"}
    kept, _ = _ask(other, "ledger.deposit", deposit, rid="other-1")
    assert ok(kept)["reused"] is False
    mine, _ = _ask(first, "ledger.deposit", {**deposit, "client_request_id": "dep-2"},
                   rid="first-1")
    for i in range(300):  # ~900 bytes each: far past this client's 64 KiB share
        ok(_ask(first, "system.health", {}, rid=f"h-{i}")[0])
    cache = server.cache
    assert cache.evicted > 0
    assert cache.bytes <= (64 << 10) + 2000, cache.bytes  # its share, and other's answer
    # the other client's answer is still there: its repeat is not executed again
    assert _ask(other, "ledger.deposit", deposit, rid="other-1")[0] == kept
    # this client's oldest answer was pushed out: its repeat is executed again, and the
    # idempotency key answers it (no second deposit)
    again, _ = _ask(first, "ledger.deposit", {**deposit, "client_request_id": "dep-2"},
                    rid="first-1")
    assert ok(mine)["reused"] is False and ok(again)["reused"] is True
    assert ok(again)["transfer_id"] == ok(mine)["transfer_id"]
    assert ok(first.request("ledger.get", {"profile_id": "p"}))["allocated"] == "1002.00"
    metrics = ok(first.request("system.metrics"))["cache"]
    assert 0 < metrics["bytes"] <= (64 << 10) + 4000 and metrics["answers"] > 50
    assert metrics["max_bytes"] == 1 << 20 and metrics["evicted"] >= 1


def test_all_clients_together_keep_to_the_total_budget(live, raw):
    server = live(server={"dedup_max_bytes": 1 << 20, "dedup_client_max_bytes": 256 << 10})
    clients = [raw(server.endpoint) for _ in range(6)]  # 6 x 256 KiB > 1 MiB
    for i in range(300):
        for n, c in enumerate(clients):
            c.send_bytes(_frame(f"{n}-{i}", "system.health", {}))
        for c in clients:
            assert c.recv() is not None
        assert server.cache.bytes <= 1 << 20
    assert server.cache.evicted > 0
    assert server.cache.bytes > (1 << 20) - 4000  # full, not emptied


# -- permission before the arguments --------------------------------------------------------

@pytest.fixture
def curve(live, keys_dir):  # noqa: F811 -- the fixture imported above
    server = live(security={"curve": True, "keys_dir": str(keys_dir)})
    made: list[Peer] = []

    def peer(name: str) -> Peer:
        made.append(Peer(keys_dir, name, zmq.DEALER, server.endpoint))
        return made[-1]

    yield server, peer
    for p in made:
        p.close()


def test_a_key_is_refused_before_its_arguments_are_read(curve):
    server, peer = curve
    admin, bot1, bot3 = peer("bot2"), peer("bot1"), peer("bot3")
    for pid in ("alpha", "beta"):
        ok(admin.request("profile.create", {"profile_id": pid, "allocated": "100"}))
    big = "k" * HUGE
    for who, pid in ((bot3, "alpha"), (bot1, "beta"), (bot3, "nope")):
        for op in ("ledger.deposit", "ledger.get", "order.list", "stats.get"):
            rid = who.send(op, {"profile_id": pid, big: 1})
            assert who.sock.poll(5000)
            frames = who.sock.recv_multipart()
            reply = msgpack.unpackb(frames[-1], raw=False)
            assert reply["id"] == rid
            assert error(reply, "FORBIDDEN") == {"profile_id": pid}, (op, pid)
            assert len(frames[-1]) < SMALL_ANSWER
    # its own profile: the arguments are read (and the unknown one quoted)
    reply = bot1.request("ledger.get", {"profile_id": "alpha", big: 1})
    assert _quoted(error(reply, "INVALID_ARGUMENT")["field"]) == big[:QUOTE_MAX - 1]
    # a profile_id that is not a valid id is the schema's to refuse
    for bad in (7, "", "x" * 129):
        reply = bot3.request("ledger.get", {"profile_id": bad})
        assert error(reply, "INVALID_ARGUMENT")["field"] == "profile_id"
    assert server.cache.bytes < 100_000


# -- a key twice ----------------------------------------------------------------------------

def _map(*pairs: tuple[Any, Any]) -> bytes:
    """A msgpack map with these pairs, duplicates included (a dict cannot hold them)."""
    head = bytes([0x80 | len(pairs)]) if len(pairs) < 16 else b"\xde" + struct.pack(
        ">H", len(pairs))
    return head + b"".join(_raw(k) + _raw(v) for k, v in pairs)


def _raw(value: Any) -> bytes:
    return value.data if isinstance(value, _Encoded) else msgpack.packb(value)


class _Encoded:
    def __init__(self, data: bytes):
        self.data = data


def test_a_map_with_a_key_twice_is_refused_at_any_depth(live, raw):
    server = live()
    r = raw(server.endpoint)
    ok(r.request("profile.create", {"profile_id": "p", "allocated": "1000"}))
    deposit = _Encoded(_map(("profile_id", "p"), ("amount", "1"),
                            ("client_request_id", "d-1"), ("amount", "900")))
    frames = [
        # op twice: a harmless op first, a withdrawal last
        _map(("v", 1), ("id", "dup-op"), ("op", "system.health"), ("op", "ledger.withdraw"),
             ("args", {"profile_id": "p", "amount": "999", "client_request_id": "w-1"})),
        _map(("v", 1), ("id", "dup-id"), ("id", "other"), ("op", "system.health")),
        _map(("v", 1), ("id", "dup-arg"), ("op", "ledger.deposit"), ("args", deposit)),
        _map(("v", 1), ("id", "dup-deep"), ("op", "risk.check"), ("args", _Encoded(_map(
            ("profile_id", "p"), ("symbol", "BTCUSDT"), ("side", "BUY"),
            ("strategy", _Encoded(_map(("a", 1), ("a", 2)))))))),
        _map(("v", 1), ("id", "dup-int"), ("op", "system.health"), ("args", _Encoded(
            _map((1, "x"), (1, "y"))))),
    ]
    for frame in frames:
        r.send_bytes(frame)
        reply = r.recv()
        assert reply is not None
        error(reply, "BAD_REQUEST")
        assert "the same key twice" in reply["error"]["message"], reply
        assert reply["id"] is None
    ledger = ok(r.request("ledger.get", {"profile_id": "p"}))
    assert (ledger["allocated"], ledger["available"]) == ("1000.00", "1000.00")
    # the same requests without the second key are served
    fine = _map(("v", 1), ("id", "fine"), ("op", "ledger.deposit"), ("args", _Encoded(
        _map(("profile_id", "p"), ("amount", "1"), ("client_request_id", "d-1")))))
    r.send_bytes(fine)
    assert ok(r.recv())["allocated"] == "1001.00"
