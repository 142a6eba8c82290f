"""The op table as a user of `capflow call` reads it: every op, its arguments and one
example, made from `capflow.protocol.ops.OPS` and the argument schemas, so that a new op
or argument shows up here without anyone writing it down twice.

An example names the op's required arguments (and `profile_id` where the op takes one),
with a sample value per argument name (`SAMPLES`); an argument without a sample gets the
first choice of its type, or a placeholder. Values are written as `capflow call` reads
them: TOML, so decimal amounts are quoted strings (``amount='"500.50"'``) and are sent
exactly.
"""

from __future__ import annotations

import shlex
import typing

import msgspec

from capflow.protocol.ops import OPS

#: a sample value per argument name, as the value of KEY=VALUE on the command line
SAMPLES: dict[str, str] = {
    "profile_id": "alpha", "account_id": "paper", "allocated": '"10000"',
    "amount": '"500.50"', "client_request_id": "k-1", "client_order_id": "o-1",
    "signal_id": "s-1", "symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
    "price": '"65000"', "qty": '"0.01"', "notional": '"500"',
    "timestamp": '"2026-01-05T12:00:00+00:00"', "state": "HALTED", "score": "72",
    "reservation_id": "rsv_18e9eecb14118180db669564d8ca",
    "order_id": "ord_18e9f247aa84e7674664058da23e",
    "position_id": "pos_18e9f247aa84e7674664058da23e",
}


#: per op: sample values that differ from `SAMPLES`, and optional arguments its example
#: names too, so that every example does what it says on a fresh server run with the
#: defaults, one after the other in this order (a BUY LIMIT below the market rests, so
#: that it can be canceled; the signal names its size, the smallest that risk allows)
OP_SAMPLES: dict[str, dict[str, str]] = {
    "profile.set_state": {"state": "ACTIVE"},
    "signal.submit": {"qty": '"0.01"'},
    "order.submit": {"type": "LIMIT", "price": '"60000"', "qty": '"0.001"'},
    "position.set_stops": {"trail_pct": '"1.5"'},
    "order.amend": {"price": '"59000"'},
    "position.reduce": {"fraction": '"0.5"'},
}
#: what an op's example needs besides a fresh server
NOTES: dict[str, str] = {
    "liquidity.set": "needs [allocation.liquidity] provider = \"push\"",
    "allocation.release": "a reservation_id from allocation.reserve",
    "order.cancel": "an order_id from order.submit (a working order)",
    "order.get": "an order_id from order.submit",
    "order.amend": "an order_id from order.submit (a working LIMIT, STOP or STOP_LIMIT)",
    "position.close": "a position_id from position.list (an open position)",
    "position.set_stops": "a position_id from position.list (an open position)",
    "position.reduce": "a position_id from position.list (an open position)",
}


def _fields(op: str) -> list[msgspec.structs.FieldInfo]:
    return list(msgspec.structs.fields(OPS[op][0]))


def _sample(op: str, field: msgspec.structs.FieldInfo) -> str:
    if field.name in OP_SAMPLES.get(op, {}):
        return OP_SAMPLES[op][field.name]
    if field.name == "client_request_id":  # a key of its own per op: no CONFLICT
        return f"{op.replace('.', '-')}-1"
    if field.name in SAMPLES:
        return SAMPLES[field.name]
    kind = field.type
    if typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    if typing.get_origin(kind) is typing.Literal:
        return str(typing.get_args(kind)[0])
    if kind is int:
        return "1"
    return field.name.upper()


def example_args(op: str) -> list[tuple[str, str]]:
    """The (name, value) pairs of `op`'s example: its required arguments, `profile_id`
    when it takes one, and those `OP_SAMPLES` names."""
    named = OP_SAMPLES.get(op, {})
    return [(f.name, _sample(op, f)) for f in _fields(op)
            if f.required or f.name == "profile_id" or f.name in named]


def example(op: str) -> str:
    """`op`'s example as a command line."""
    words = ["capflow", "call", op]
    words += [f"{name}={shlex.quote(value)}" for name, value in example_args(op)]
    return " ".join(words)


def signature(op: str) -> str:
    """``profile_id allocated [risk_profile account_id currency]``."""
    fields = _fields(op)
    required = [f.name for f in fields if f.required]
    optional = [f.name for f in fields if not f.required]
    return " ".join(required + ([f"[{' '.join(optional)}]"] if optional else []))


def help_text() -> str:
    """Every op with its arguments (optional ones in brackets) and one example."""
    lines = ["operations (every op of this capflow, with its arguments; optional ones in",
             "brackets; docs/protocol.md section 6 has each in full):", ""]
    for op in OPS:
        lines.append(f"  {op:<19} {signature(op)}".rstrip())
        note = f"   # {NOTES[op]}" if op in NOTES else ""
        lines.append(f"      {example(op)}{note}")
    lines += ["", "values are TOML when they parse: quote a decimal amount as a TOML string "
              "(amount='\"500.50\"')", "so it is sent exactly; unquoted, 500.50 is a float."]
    return "\n".join(lines)
