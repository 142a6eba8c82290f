"""Fuzzing the v1 gateway over a real socket (docs/protocol.md: "Every request gets exactly one
reply, also a malformed one ... The server never closes a connection or dies because of
what a client sent").

Each hypothesis test starts ONE live server and one DEALER, then throws random bytes,
random msgpack maps, or well-formed envelopes with hostile arguments at it. Every reply
must be a v1 map with a boolean `ok`, an error code from the closed set with a `details`
map, and the request's id when the request was a map with a valid id. Frames larger than
`max_request_bytes` are refused by the socket (the peer is disconnected): those go out on
a fresh DEALER, get no reply, and the server must keep answering everyone else.
"""

from __future__ import annotations

import itertools
import math
import struct
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import msgspec
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capflow.actors.model.errors import CODES
from capflow.protocol.auth import generate
from capflow.protocol.client import CurveKeys
from capflow.protocol.codec import quote
from capflow.protocol.ops import OPS

from .conftest import Raw
from .test_curve import _write_clients

LIMIT = 1 << 20  # the default server.max_request_bytes
SMALL_ERROR = 2048  # bytes: the largest error answer, whatever the request
PROFILE = "fz"  # created up front so fuzzed requests reach the ledger for real
OP_NAMES = sorted(OPS)
JUNK_OPS = ["", "system", "system.health.x", "SYSTEM.HEALTH", "profile.create ", "x" * 300,
            "ledger.get\x00", "no.such.op", "__class__", "profile.créer"]
FIELDS = sorted({f.name for schema, _ in OPS.values() for f in msgspec.structs.fields(schema)})


def _settings(n: int):
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])


# -- a msgpack writer that can nest deeper than msgpack.Packer allows (511 levels) --------

@dataclass(frozen=True)
class Deep:
    """`depth` nested one-element lists around `leaf`, written without recursion."""

    depth: int
    leaf: Any = None


def _header(n: int, fix: int, b16: int, b32: int) -> bytes:
    if n < 16:
        return bytes([fix | n])
    if n < 1 << 16:
        return bytes([b16]) + struct.pack(">H", n)
    return bytes([b32]) + struct.pack(">I", n)


@dataclass(frozen=True)
class Pairs:
    """A msgpack map written from a list of pairs, so that it may have a key twice."""

    pairs: tuple[tuple[Any, Any], ...]


def enc(obj: Any) -> bytes:
    if isinstance(obj, Deep):
        return b"\x91" * obj.depth + enc(obj.leaf)
    if isinstance(obj, Pairs):
        return _header(len(obj.pairs), 0x80, 0xDE, 0xDF) + b"".join(
            enc(k) + enc(v) for k, v in obj.pairs)
    if isinstance(obj, dict):
        return _header(len(obj), 0x80, 0xDE, 0xDF) + b"".join(
            enc(k) + enc(v) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return _header(len(obj), 0x90, 0xDC, 0xDD) + b"".join(enc(x) for x in obj)
    return msgpack.packb(obj, use_bin_type=True)


class _Twice(Exception):
    pass


def _once(pairs: list[tuple[Any, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Twice
    return out


def valid_id(payload: bytes) -> str | None:
    """The id the reply must echo: the request decodes to a map whose id is a str of
    1..64 characters (and no map in it has a key twice); None otherwise."""
    try:
        msg = msgpack.unpackb(payload, raw=False, strict_map_key=False,
                              object_pairs_hook=_once)
    except Exception:
        return None
    if not isinstance(msg, dict):
        return None
    rid = msg.get("id")
    return rid if isinstance(rid, str) and 1 <= len(rid) <= 64 else None


# -- the wire checker ---------------------------------------------------------------------

class Wire:
    """One DEALER against one server; checks every reply against the envelope contract."""

    def __init__(self, server, raw):
        self.server = server
        self.raw = raw
        self.sock = raw(server.endpoint)
        self.sent = 0
        self.oversize = 0
        self.codes: dict[str, int] = {}
        self.history: list[tuple[bytes, dict]] = []  # (frame, its reply), oversize left out

    def exchange(self, payload: bytes) -> dict | None:
        if len(payload) > LIMIT:
            self._oversize(payload)
            return None
        self.sent += 1
        self.sock.send_bytes(payload)
        reply = self.sock.recv()
        assert reply is not None, f"no reply to {payload[:80]!r} ({len(payload)} bytes)"
        check_reply(reply)
        if not reply["ok"]:  # whatever was sent, an error answer (kept in the cache) is small
            assert len(msgpack.packb(reply)) < SMALL_ERROR, (payload[:80], len(payload))
        rid = valid_id(payload)
        if rid is not None:
            assert reply["id"] == rid, (reply, payload[:80])
        else:
            assert reply["id"] is None, (reply, payload[:80])
        self.history.append((payload, reply))
        code = "OK" if reply["ok"] else reply["error"]["code"]
        self.codes[code] = self.codes.get(code, 0) + 1
        if self.sent % 8 == 0:  # sampled: exactly one reply, not two
            assert not self.sock.sock.poll(50), "a second reply to one request"
        return reply

    def _oversize(self, payload: bytes) -> None:
        self.oversize += 1
        fresh = self.raw(self.server.endpoint, timeout_ms=200)
        fresh.send_bytes(payload)
        assert fresh.recv() is None, "an oversize frame was answered"
        health = self.sock.request("system.health")  # everyone else is still served
        assert health["ok"] is True and health["result"]["status"] == "ok"

    def replay(self) -> None:
        """Resend every frame back to back on the same connection: what was executed is
        answered from the id cache, what was malformed is refused again, so each frame
        gets exactly its first answer, in order."""
        for payload, _ in self.history:
            self.sock.send_bytes(payload)
        for payload, first in self.history:
            again = self.sock.recv()
            assert again == first, (payload[:80], first, again)

    def burst(self) -> None:
        """Send every frame back to back from a new connection (a new client: nothing is
        cached for it, so all of it runs, concurrently): one valid reply per frame."""
        other = self.raw(self.server.endpoint)
        for payload, _ in self.history:
            other.send_bytes(payload)
        expected = sorted(valid_id(p) or "" for p, _ in self.history)
        got = []
        for _ in self.history:
            reply = other.recv()
            assert reply is not None, f"{len(got)} of {len(expected)} replies"
            check_reply(reply)
            got.append(reply["id"] or "")
        assert sorted(got) == expected
        assert not other.sock.poll(100), "a stray reply after the burst"

    def finish(self) -> None:
        """No stray replies left over; the server answers on this and on a new socket."""
        assert not self.sock.sock.poll(100), "a stray reply after the run"
        for sock in (self.sock, self.raw(self.server.endpoint)):
            reply = sock.request("system.health")
            assert reply["ok"] is True, reply
            assert reply["result"]["status"] == "ok"
            assert reply["result"]["protocol"] == 1


def check_reply(reply: Any) -> None:
    assert isinstance(reply, dict), reply
    assert reply.get("v") == 1, reply
    assert isinstance(reply.get("ok"), bool), reply
    assert "id" in reply, reply
    if reply["ok"]:
        assert "result" in reply and "error" not in reply, reply
    else:
        err = reply.get("error")
        assert isinstance(err, dict), reply
        assert err.get("code") in CODES, reply
        assert isinstance(err.get("message"), str), reply
        assert isinstance(err.get("details"), dict), reply
        # INTERNAL is "a bug", TIMEOUT means a request hung for 10 s: neither may be
        # provoked by what a client sends
        assert err["code"] not in ("INTERNAL", "TIMEOUT"), reply


@pytest.fixture
def wire(live, raw):
    server = live()
    w = Wire(server, raw)
    created = w.sock.request("profile.create", {"profile_id": PROFILE, "allocated": "100000"})
    assert created["ok"] is True, created
    return w


# -- strategies ---------------------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
_ints = st.one_of(st.integers(-(2**63), 2**64 - 1),
                  st.sampled_from([0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63),
                                   2**64 - 1, 10**15, 10**18]))
_floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0, 1e40, 1e-40,
                                     5e-324, 1.7976931348623157e308, 0.1]))
_small_text = st.builds(lambda c, n: c * n,
                        st.sampled_from(["a", "9", "\u00e9", "\u20ac", "\U0001f4b0", "\x00"]),
                        st.integers(0, 65536))
_nasty_text = st.sampled_from(["1e400", "-1e400", str(10**40), "-0.0", "NaN", "inf", "-inf",
                               "sNaN", "1_000", "0x10", " 12 ", "", "1e-400", "0.001",
                               "100.00", "12345678901234567890", "1e9999999999999999999",
                               "\u0661\u0662", "1,5", "fz", PROFILE, "ACTIVE", "HALTED"])
_ext = st.one_of(st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=16)),
                 st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1),
                           st.integers(0, 999_999_999)))
_deep = st.builds(Deep, st.integers(200, 500),
                  st.one_of(st.none(), _ints, _text, st.dictionaries(_text, _ints, max_size=2)))
_scalars = st.one_of(st.none(), st.booleans(), _ints, _floats, _text, _nasty_text,
                     st.binary(max_size=40), _ext)
values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.one_of(_text, _ints), inner, max_size=5)),
    max_leaves=25,
)
hostile = st.one_of(values, values, _deep, _nasty_text, _nasty_text, _small_text)

_keys = st.one_of(_text, _ints, st.booleans(), st.none(), st.binary(max_size=8),
                  st.floats(allow_nan=False), st.sampled_from(["v", "id", "op", "args"]))
_ids = st.one_of(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=64),
                 st.just("x" * 64), st.just("x" * 65), st.just(""), _ints, st.none(),
                 st.binary(min_size=1, max_size=8))


@st.composite
def maps(draw) -> dict:
    """Any msgpack map as the whole message, often with some envelope keys mixed in."""
    msg = draw(st.dictionaries(_keys, values, max_size=6))
    for key, strat in (("v", st.one_of(st.just(1), values)), ("id", _ids),
                       ("op", st.one_of(st.sampled_from(OP_NAMES), values)),
                       ("args", values)):
        if draw(st.booleans()):
            msg[key] = draw(strat)
    return msg


_counter = itertools.count()

#: a plausible value per argument name, so that many requests pass validation
PLAUSIBLE = {
    "profile_id": st.sampled_from([PROFILE, PROFILE, "fz-2", "fz-3", "nope"]),
    "allocated": st.sampled_from(["1000", 500, "0", 0.1, "1e3"]),
    "risk_profile": st.sampled_from([None, "default", "atlas", "nova"]),
    "breakers": st.sampled_from([[], ["daily"], ["max", "weekly"], ["hourly"]]),
    "account_id": st.sampled_from([None, "acc-1"]),
    "currency": st.sampled_from([None, "USDT", "BTC", "XXX"]),
    "limit": st.integers(1, 5),
    "cursor": st.sampled_from([None, "", "fz"]),
    "state": st.sampled_from(["ACTIVE", "ACTIVE", "REDUCE_ONLY", "HALTED", "active"]),
    "reason": st.sampled_from(["", "fuzz"]),
    "score": st.sampled_from(["72", 0, 100, "101", "-1", 55.5]),
    "risk_regime": st.sampled_from(["NORMAL", "RISK_OFF", "", "x" * 40]),
    "volatility": st.sampled_from(["18.5", 0, "-3"]),
    "confidence": st.sampled_from(["80", 68, "150"]),
    "market": st.sampled_from([None, "spot", "futures"]),
    "price_hint": st.sampled_from([None, "65000", "-1"]),
    "amount": st.sampled_from(["1", "2.50", 3, 0.25, "0.001", "99999999", "-1"]),
    "client_request_id": st.sampled_from(["k-1", "k-2", "k-3"]) | st.uuids().map(str),
    "symbol": st.sampled_from(["BTCUSDT", "ETHUSDT"]),
    "ttl_s": st.sampled_from([None, 1, 60, 604800, 604801]),
    "reservation_id": st.sampled_from(["nope", "r-1"]),
    "order_id": st.sampled_from(["nope", "ord_1"]),
    "position_id": st.sampled_from(["nope", "pos_1"]),
    "client_order_id": st.sampled_from(["o-1", "o-2"]) | st.uuids().map(str),
    "side": st.sampled_from(["BUY", "SELL", "long", "short", "buy", "HOLD"]),
    "type": st.sampled_from(["MARKET", "LIMIT", "market", "STOP", "STOP_LIMIT", "TRAIL"]),
    "trigger_price": st.sampled_from([None, "66000", "0", "1e20"]),
    "trail_amount": st.sampled_from([None, "100", "0", "-1", "1e20"]),
    "trail_pct": st.sampled_from([None, "1.5", "100", "0", 1e-30]),
    "trail_activation": st.sampled_from([None, "66000", "0"]),
    "clear": st.sampled_from([[], ["tp"], ["trail", "sl"], ["all"], "tp", None]),
    "time_in_force": st.sampled_from([None, "GTC", "IOC", "fok", "GTD", "DAY"]),
    "expire_at": st.sampled_from([None, "2099-01-01T00:00:00Z", "2020-01-01T00:00:00Z",
                                  1e20, -1, "soon", 4102444800]),
    "price": st.sampled_from(["65000", 3200, 0.5, "0", "-1", "1e20"]),
    "tp_price": st.sampled_from([None, "70000", "1"]),
    "sl_price": st.sampled_from([None, "60000", "99999"]),
    "qty": st.sampled_from(["0.01", 1, "0.0000001", "0"]),
    "fraction": st.sampled_from([None, "0.5", "1", "0", "2", 1e-9]),
    "notional": st.sampled_from([None, "100", "1e9"]),
    "timestamp": st.sampled_from(["2026-11-21T10:00:00+00:00", 1763719200, "yesterday"]),
    "signal_id": st.sampled_from(["s-1", "s-2"]) | st.uuids().map(str),
    "exchange": st.sampled_from([None, "binance"]),
    "timeframe_min": st.sampled_from([None, 1, 15, -1]),
    "strategy": st.sampled_from([None, "ema", "rsi"]),
    "tp_pct": st.sampled_from([None, "2", 150, "0"]),
    "sl_pct": st.sampled_from([None, "1", "100"]),
    "status": st.sampled_from([None, "OPEN", "CLOSED", "FILLED", "nonsense"]),
    "group_by": st.sampled_from([None, "strategy", "symbol", "exchange", "colour"]),
    "scope": st.sampled_from(["profile", "account", "all", "galaxy"]),
    "sizing": st.sampled_from([None, "refuse", "shrink", "SHRINK", "partial"]),
}


@st.composite
def envelopes(draw) -> tuple[str, bytes]:
    """A well-formed envelope (unique id) around a real or junk op with hostile args."""
    op = draw(st.one_of(st.sampled_from(OP_NAMES), st.sampled_from(OP_NAMES),
                        st.sampled_from(JUNK_OPS)))
    schema = OPS[op][0] if op in OPS else None
    own = [f.name for f in msgspec.structs.fields(schema)] if schema else []
    names = st.sampled_from(own or FIELDS)
    name = st.one_of(names, names, st.sampled_from(FIELDS), _text)
    plausible = st.sampled_from([PROFILE, "nope", "BTCUSDT", "ACTIVE", "REDUCE_ONLY", "1",
                                 "0.5"])
    if own and draw(st.booleans()):  # plausible arguments, one of them hostile now and then
        args = {f: draw(PLAUSIBLE[f]) for f in own if draw(st.integers(0, 5))}
        args = {k: v for k, v in args.items() if v is not None}
        if args and not draw(st.integers(0, 3)):
            args[draw(st.sampled_from(sorted(args)))] = draw(hostile)
    else:
        args = draw(st.dictionaries(name, st.one_of(plausible, _ints, hostile), max_size=6))
        if "profile_id" in own and draw(st.booleans()):
            args["profile_id"] = draw(st.sampled_from([PROFILE, "nope", "a/b", "x" * 129]))
    size = draw(st.integers(0, 29))  # now and then one string of up to ~1 MiB
    if size < 3 and args:
        big = draw(st.sampled_from(sorted(args)))
        args[big] = "a" * ((LIMIT // 2, LIMIT - 1024, LIMIT)[size])
    elif size == 3:  # or one huge argument name (the server quotes it short)
        args[draw(st.sampled_from("kz\u20ac")) * (LIMIT // 4)] = 1
    tag = f"{next(_counter)}:"
    rid = (tag + draw(st.text(st.characters(exclude_categories=("Cs",)), max_size=64)))[:64]
    msg: dict[str, Any] = {"v": 1, "id": rid, "op": op}
    if draw(st.integers(0, 9)):  # args is optional in the envelope
        msg["args"] = args
    return op, enc(msg)


# -- the fuzz runs ------------------------------------------------------------------------

def test_fuzz_random_bytes(wire):
    prefixes = st.sampled_from([b"", b"\x84", b"\x85", b"\xde\xff\xff", b"\xdf\xff\xff\xff\xff",
                                b"\xc1", b"\x91", b"\xd9\xff", b"\x84\xa1v\x01\xa2id"])

    @_settings(250)
    @given(prefix=prefixes, body=st.binary(max_size=2048))
    def run(prefix, body):
        payload = prefix + body
        reply = wire.exchange(payload)
        if valid_id(payload) is None:
            assert reply["ok"] is False and reply["error"]["code"] in (
                "BAD_REQUEST", "UNSUPPORTED_VERSION"), reply

    run()
    wire.replay()
    wire.finish()
    assert wire.sent >= 200
    assert wire.codes.get("BAD_REQUEST", 0) >= 100, wire.codes


def test_fuzz_random_msgpack_maps(wire):
    @_settings(250)
    @given(msg=maps())
    def run(msg):
        reply = wire.exchange(enc(msg))
        if not reply["ok"] and reply["error"]["code"] == "UNSUPPORTED_VERSION":
            assert reply["error"]["details"] == {"supported": [1]}, reply
        if "v" not in msg or "id" not in msg or "op" not in msg:
            assert reply["error"]["code"] == "BAD_REQUEST", (msg, reply)

    run()
    wire.replay()
    wire.finish()
    assert wire.codes.get("BAD_REQUEST", 0) >= 100, wire.codes


def test_fuzz_envelopes_with_hostile_args(wire):
    fields = {op: {f.name for f in msgspec.structs.fields(schema)}
              for op, (schema, _) in OPS.items()}

    @_settings(400)
    @given(sample=envelopes())
    def run(sample):
        op, payload = sample
        reply = wire.exchange(payload)
        if reply is None:
            return  # oversize: refused by the socket, checked in exchange
        args = msgpack.unpackb(payload, raw=False, strict_map_key=False).get("args", {})
        if op == "":
            assert reply["error"]["code"] == "BAD_REQUEST", reply
        elif op not in OPS:
            assert reply["error"]["code"] == "UNKNOWN_OP", reply
            details = reply["error"]["details"]
            assert details["op"] == quote(op), reply
            assert set(details) == {"op", "did_you_mean"}, reply
            assert set(details["did_you_mean"]) <= set(OPS), reply
        elif set(args) - fields[op]:
            assert reply["error"]["code"] == "INVALID_ARGUMENT", (args.keys(), reply)
        elif reply["ok"]:
            assert isinstance(reply["result"], dict), reply

    run()
    wire.replay()
    wire.burst()
    wire.finish()
    # the fuzz reached real code paths, not only the envelope checks
    assert wire.codes.get("OK", 0) >= 5, wire.codes
    assert wire.codes.get("INVALID_ARGUMENT", 0) >= 50, wire.codes
    assert wire.codes.get("UNKNOWN_OP", 0) >= 20, wire.codes
    ledger = wire.sock.request("ledger.get", {"profile_id": PROFILE})
    assert ledger["ok"] is True, ledger
    assert ledger["result"]["profile_id"] == PROFILE


# -- hand-picked frames ---------------------------------------------------------------------

def _env(rid: str, **kw: Any) -> dict:
    return {"v": 1, "id": rid, "op": "system.health", "args": {}, **kw}


#: (frame, expected code, expected reply id); every readable id is distinct, so the
#: frames can also go back to back on one connection without hitting the id cache
NASTY = [
    (b"", "BAD_REQUEST", None),
    (b"\xc1", "BAD_REQUEST", None),  # the one byte msgpack never uses
    (b"\x84", "BAD_REQUEST", None),  # a map header and nothing else
    (b"\xa5caf\xc3\xa9"[:5], "BAD_REQUEST", None),  # truncated str
    (b"\xa2\xff\xfe", "BAD_REQUEST", None),  # not UTF-8
    (b"\x91" * 1000 + b"\xc0", "BAD_REQUEST", None),  # decodes, but is not a map
    (b"\x91" * 5000 + b"\xc0", "BAD_REQUEST", None),  # deeper than the decoder allows
    (enc(_env("n-trail")) + b"\xc0", "BAD_REQUEST", None),  # trailing bytes after the map
    (b"\x81\xa2id\xc4\x01x", "BAD_REQUEST", None),  # id as bytes, nothing else
    (enc([1, "id", "x"]), "BAD_REQUEST", None),
    (enc({}), "BAD_REQUEST", None),
    (enc({1: 1, 2.5: "x", None: True, b"id": "b", "id": "n-keys"}), "BAD_REQUEST", "n-keys"),
    (enc({**_env("n-extra"), 7: "extra"}), "BAD_REQUEST", "n-extra"),
    (enc(_env("x" * 65)), "BAD_REQUEST", None),
    (enc(_env("")), "BAD_REQUEST", None),
    (enc(_env(12)), "BAD_REQUEST", None),
    (enc(_env(None)), "BAD_REQUEST", None),
    (enc(_env("n-v2", v=2)), "UNSUPPORTED_VERSION", "n-v2"),
    (enc(_env("n-v0", v=0)), "UNSUPPORTED_VERSION", "n-v0"),
    (enc(_env("n-vmax", v=2**64 - 1)), "UNSUPPORTED_VERSION", "n-vmax"),
    (enc(_env("n-vmin", v=-(2**63))), "UNSUPPORTED_VERSION", "n-vmin"),
    (enc(_env("x" * 65, v=2)), "UNSUPPORTED_VERSION", None),
    (enc(_env("n-vstr", v="1")), "BAD_REQUEST", "n-vstr"),
    (enc(_env("n-vfloat", v=1.0)), "BAD_REQUEST", "n-vfloat"),
    (enc(_env("n-vbool", v=True)), "BAD_REQUEST", "n-vbool"),
    (enc(_env("n-vnil", v=None)), "BAD_REQUEST", "n-vnil"),
    (enc({"id": "n-nov", "op": "system.health"}), "BAD_REQUEST", "n-nov"),
    (enc({"v": 1, "id": "n-noop"}), "BAD_REQUEST", "n-noop"),
    (enc(_env("n-op0", op="")), "BAD_REQUEST", "n-op0"),
    (enc(_env("n-oplist", op=["system.health"])), "BAD_REQUEST", "n-oplist"),
    (enc(_env("n-args-list", args=[])), "BAD_REQUEST", "n-args-list"),
    (enc(_env("n-args-key", args={1: "x"})), "BAD_REQUEST", "n-args-key"),
    (enc(_env("x" * 64, op="no.such")), "UNKNOWN_OP", "x" * 64),
    (enc(_env("\U0001f4b0" * 64, op="no.such")), "UNKNOWN_OP", "\U0001f4b0" * 64),
    (enc(_env("n-unknown-arg", args={"x": 1})), "INVALID_ARGUMENT", "n-unknown-arg"),
    (enc(_env("n-deep-arg", op="ledger.get", args={"profile_id": Deep(1000)})),
     "INVALID_ARGUMENT", "n-deep-arg"),
    (enc(_env("n-too-deep", op="ledger.get", args={"profile_id": Deep(1100)})),
     "BAD_REQUEST", None),
    (enc(_env("n-long-pid", op="ledger.get", args={"profile_id": "x" * 129})),
     "INVALID_ARGUMENT", "n-long-pid"),
    (enc(_env("n-nan", op="profile.create", args={"profile_id": "n1", "allocated": math.nan})),
     "INVALID_ARGUMENT", "n-nan"),
    (enc(_env("n-inf", op="profile.create", args={"profile_id": "n1", "allocated": "1e400"})),
     "INVALID_ARGUMENT", "n-inf"),
    (enc(_env("n-missing", op="ledger.get", args={"profile_id": "nope"})), "NOT_FOUND",
     "n-missing"),
]

FIELD_OF = {"n-unknown-arg": "x", "n-deep-arg": "profile_id", "n-long-pid": "profile_id",
            "n-nan": "allocated", "n-inf": "allocated"}


def _check_nasty(reply: dict | None, frame: bytes, code: str, rid: str | None) -> None:
    assert reply is not None, f"no reply to {frame[:40]!r}"
    check_reply(reply)
    assert reply["ok"] is False, reply
    assert reply["error"]["code"] == code, (frame[:60], reply)
    assert reply["id"] == rid, (frame[:60], reply)
    if code == "UNSUPPORTED_VERSION":
        assert reply["error"]["details"] == {"supported": [1]}, reply
    if code == "INVALID_ARGUMENT":
        assert reply["error"]["details"]["field"] == FIELD_OF[rid], reply
    if code == "NOT_FOUND":
        assert reply["error"]["details"]["kind"] == "profile", reply


def test_nasty_frames_get_their_code(live, raw):
    """Each frame on its own connection: exactly one reply, with the expected code."""
    server = live()
    for frame, code, rid in NASTY:
        r = raw(server.endpoint)
        r.send_bytes(frame)
        _check_nasty(r.recv(), frame, code, rid)
        assert not r.sock.poll(50), f"a second reply to {frame[:40]!r}"
        health = r.request("system.health")
        assert health["ok"] is True and health["result"]["status"] == "ok"


def test_nasty_frames_in_a_row_on_one_socket(live, raw):
    """The same frames back to back on one connection: one reply each, in order."""
    server = live()
    r = raw(server.endpoint)
    for frame, code, rid in NASTY:
        r.send_bytes(frame)
        _check_nasty(r.recv(), frame, code, rid)
    assert not r.sock.poll(100), "a stray reply"
    assert r.request("system.health")["ok"] is True
    # nothing that failed validation created anything
    listed = r.request("profile.list")
    assert listed["ok"] is True and listed["result"]["profiles"] == [], listed


def test_frame_size_limit_is_exact_and_refusal_only_hits_the_sender(live, raw):
    server = live(server={"max_request_bytes": 4096})
    bystander = raw(server.endpoint)
    assert bystander.request("system.health")["ok"] is True

    def frame_of(size: int, rid: str) -> bytes:
        head = enc({"v": 1, "id": rid, "op": "no.such", "args": {"pad": ""}})
        pad = size - len(head)
        out = enc({"v": 1, "id": rid, "op": "no.such", "args": {"pad": "p" * pad}})
        out = enc({"v": 1, "id": rid, "op": "no.such",
                   "args": {"pad": "p" * (pad - (len(out) - size))}})
        assert len(out) == size
        return out

    at_limit = raw(server.endpoint)
    at_limit.send_bytes(frame_of(4096, "at-limit"))
    reply = at_limit.recv()
    assert reply is not None and reply["id"] == "at-limit"
    assert reply["error"]["code"] == "UNKNOWN_OP"

    for size in (4097, 8192, 1 << 20):
        over = raw(server.endpoint, timeout_ms=300)
        over.send_bytes(frame_of(size, f"over-{size}"))
        assert over.recv() is None, size
        reply = bystander.request("system.health")
        assert reply["ok"] is True and reply["result"]["status"] == "ok"

    # the refused peer reconnects by itself (ZeroMQ) and is served again
    over.timeout_ms = 3000
    rid = uuid.uuid4().hex
    over.send_bytes(enc({"v": 1, "id": rid, "op": "system.health"}))
    reply = over.recv()
    assert reply is not None, "the refused peer is not served after reconnecting"
    check_reply(reply)
    assert reply["id"] == rid and reply["ok"] is True


def test_odd_framing_still_gets_exactly_one_reply(live, raw):
    """A DEALER that does not send exactly [b"", frame]: the last frame is the request,
    the frames before it are the route, and the reply goes back along it, once."""
    server = live()
    health = enc({"v": 1, "id": "f-1", "op": "system.health"})
    cases = [
        ([b"", b"hop", health], [b"", b"hop"], "f-1", True),
        ([health], [], "f-1", True),  # no empty delimiter at all
        ([b""], [], None, False),  # only the delimiter: an empty request
        ([b"", b""], [b""], None, False),
        ([b"", health, b"\xc1"], [b"", health], None, False),  # the request is the last frame
    ]
    for frames, route, rid, ok in cases:
        r = raw(server.endpoint)
        r.sock.send_multipart(frames)
        assert r.sock.poll(3000), frames
        got = r.sock.recv_multipart()
        assert got[:-1] == route, got
        reply = msgpack.unpackb(got[-1], raw=False)
        check_reply(reply)
        assert reply["id"] == rid and reply["ok"] is ok, reply
        if not ok:
            assert reply["error"]["code"] == "BAD_REQUEST", reply
        assert not r.sock.poll(50), "a second reply"


def test_invalid_argument_names_odd_unknown_fields(live, raw):
    r = raw(live().endpoint)
    for name in ("", "a`b"):
        reply = r.request("system.health", {name: 1})
        assert reply["error"]["code"] == "INVALID_ARGUMENT", reply
        assert reply["error"]["details"]["field"] == name, reply


# -- maps with a key twice -------------------------------------------------------------------

@st.composite
def twice(draw) -> bytes:
    """A request in which one map (the envelope, args, or a map inside an argument) has
    a key twice, the second time with another value."""
    op = draw(st.sampled_from(OP_NAMES))
    own = [f.name for f in msgspec.structs.fields(OPS[op][0])]
    args = {f: draw(PLAUSIBLE[f]) for f in own}
    args = {k: v for k, v in args.items() if v is not None}
    where = draw(st.sampled_from(["envelope", "args", "nested"] if args else ["envelope"]))
    env: list[tuple[Any, Any]] = [("v", 1), ("id", f"{next(_counter)}:twice"), ("op", op)]
    if where == "envelope":
        key = draw(st.sampled_from(["v", "id", "op", "args"]))
        env.append(("args", args))
        env.insert(draw(st.integers(0, len(env))), (key, draw(st.one_of(
            st.sampled_from(OP_NAMES), st.just({}), st.just(1), _ids))))
    elif where == "args":
        pairs = list(args.items())
        key = draw(st.sampled_from(sorted(args)))
        pairs.insert(draw(st.integers(0, len(pairs))), (key, draw(values)))
        env.append(("args", Pairs(tuple(pairs))))
    else:
        key = draw(st.sampled_from(sorted(args)))
        inner = draw(st.dictionaries(_text, _ints, min_size=1, max_size=3))
        dup = draw(st.sampled_from(sorted(inner)))
        args[key] = Pairs((*inner.items(), (dup, draw(_ints))))
        env.append(("args", args))
    return enc(Pairs(tuple(draw(st.permutations(env)))))


def test_fuzz_maps_with_a_key_twice_are_refused_and_change_nothing(wire):
    before = wire.sock.request("ledger.get", {"profile_id": PROFILE})["result"]

    @_settings(200)
    @given(payload=twice())
    def run(payload):
        reply = wire.exchange(payload)
        assert reply["ok"] is False and reply["error"]["code"] == "BAD_REQUEST", reply
        assert reply["id"] is None, reply

    run()
    wire.replay()
    wire.finish()
    after = wire.sock.request("ledger.get", {"profile_id": PROFILE})["result"]
    assert after == before
    assert wire.codes == {"BAD_REQUEST": wire.sent}


# -- CURVE: event subscribers that come and go during the load ----------------------------------

class CurveRaw(Raw):
    """A bare DEALER with a CURVE key of the key directory."""

    def __init__(self, endpoint: str, keys_dir: Path, name: str, timeout_ms: int = 5000):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        CurveKeys.load(str(keys_dir / "server.key"),
                       str(keys_dir / f"{name}.key_secret")).apply(self.sock)
        self.sock.connect(endpoint)
        self.timeout_ms = timeout_ms


def _churn(server, keys_dir: Path, stop: threading.Event, rounds: list[int]) -> None:
    """Subscribers that subscribe, maybe read a little, and go, over and over."""
    ctx = zmq.Context()
    try:
        while not stop.is_set():
            for name, topic in (("bot2", b""), ("bot2", b"ledger."), ("bot1", b"")):
                sub = ctx.socket(zmq.SUB)
                sub.setsockopt(zmq.LINGER, 0)
                CurveKeys.load(str(keys_dir / "server.key"),
                               str(keys_dir / f"{name}.key_secret")).apply(sub)
                sub.connect(server.events_endpoint)
                sub.setsockopt(zmq.SUBSCRIBE, topic)
                if sub.poll(20):
                    sub.recv_multipart()
                if rounds[0] % 2:
                    sub.setsockopt(zmq.UNSUBSCRIBE, topic)
                sub.close(0)
            rounds[0] += 1
    finally:
        ctx.term()


def test_fuzz_under_curve_while_subscribers_come_and_go(live, tmp_path):
    keys_dir = tmp_path / "keys"
    generate(keys_dir, ["bot1", "bot2"])
    _write_clients(keys_dir, {"bot1": [PROFILE], "bot2": ["*"]})
    server = live(security={"curve": True, "keys_dir": str(keys_dir)})
    made: list[Raw] = []

    def connect(endpoint: str, timeout_ms: int = 5000, name: str = "bot2") -> Raw:
        made.append(CurveRaw(endpoint, keys_dir, name, timeout_ms))
        return made[-1]

    stop, rounds = threading.Event(), [0]
    churn = threading.Thread(target=_churn, args=(server, keys_dir, stop, rounds))
    try:
        w = Wire(server, connect)
        assert w.sock.request("profile.create", {"profile_id": PROFILE,
                                                 "allocated": "100000"})["ok"] is True
        churn.start()

        @_settings(150)
        @given(sample=envelopes(), deposit=st.booleans())
        def run(sample, deposit):
            _, payload = sample
            w.exchange(payload)
            if deposit:  # events for the subscribers
                w.exchange(enc({"v": 1, "id": f"{next(_counter)}:dep", "op": "ledger.deposit",
                                "args": {"profile_id": PROFILE, "amount": "1",
                                         "client_request_id": uuid.uuid4().hex}}))

        run()
    finally:
        stop.set()
        if churn.is_alive():
            churn.join(10)
        for r in made:
            r.close()
    assert rounds[0] >= 3, rounds
    assert server.failure is None and server._thread.is_alive()
    restricted = connect(server.endpoint, name="bot1")
    try:
        assert restricted.request("ledger.get", {"profile_id": PROFILE})["ok"] is True
    finally:
        restricted.close()
