"""The v1 envelope and its msgpack encoding (docs/protocol.md).

Replies carry money, prices and quantities as decimal strings and timestamps as ISO-8601
UTC strings; requests are decoded defensively (any bytes may arrive) and every failure
becomes a `WireError` with a code from the closed set. A map that has a key twice is
refused, at any depth: msgpack would silently keep the last value. An error quotes what
the client sent only through `quote` (at most 64 characters), so that an answer, which
the reply cache keeps, stays small whatever the request was.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgpack
import msgspec

from capflow.actors.model.errors import CODES, CapflowError

VERSION = 1
SUPPORTED = [VERSION]


class WireError(Exception):
    """An error answer: `code` from the closed set, a message, structured details."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None):
        assert code in CODES, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}

    @classmethod
    def of(cls, exc: BaseException) -> WireError:
        if isinstance(exc, WireError):
            return exc
        if isinstance(exc, CapflowError) and exc.code in CODES:
            return cls(exc.code, exc.message, exc.details)
        return cls("INTERNAL", "internal error; the server log has the details")


class Envelope(msgspec.Struct, frozen=True):
    id: str
    op: str
    args: dict[str, Any]


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return format(obj, "f")
    if isinstance(obj, datetime):
        return iso(obj)
    if isinstance(obj, msgspec.Struct):
        return msgspec.structs.asdict(obj)
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


_local = threading.local()


def pack(obj: Any) -> bytes:
    """Encode one message. Answers are encoded in whichever thread finishes a request, and
    a msgpack Packer keeps a buffer, so each thread has its own."""
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(default=_default, use_bin_type=True)
    try:
        return packer.pack(obj)
    except BaseException:
        packer.reset()  # never leave half a message in the buffer for the next call
        raise


def ok_reply(req_id: str, result: Any) -> bytes:
    return pack({"v": VERSION, "id": req_id, "ok": True, "result": result})


def error_reply(req_id: str | None, err: WireError) -> bytes:
    return pack({"v": VERSION, "id": req_id, "ok": False,
                 "error": {"code": err.code, "message": err.message,
                           "details": err.details}})


#: the most characters of a client's text an error quotes
QUOTE_MAX = 64
CUT = "\u2026"  # what ends a quote that was cut: ...


def quote(text: Any) -> str:
    """Client-sent text (a name, an op, a value) for an error message or its details:
    as is up to `QUOTE_MAX` characters, else its first `QUOTE_MAX - 1` and `CUT`."""
    if not isinstance(text, str):
        text = repr(text[:QUOTE_MAX]) if isinstance(text, bytes) else str(text)
    return text if len(text) <= QUOTE_MAX else text[:QUOTE_MAX - 1] + CUT


class _DuplicateKey(Exception):
    pass


def _map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey
    return out


def decode(payload: bytes) -> Envelope:
    """Parse one request frame. Raises `WireError` with `.req_id` set when the id could
    be read (so the error answer can echo it)."""
    try:
        msg = msgpack.unpackb(payload, raw=False, strict_map_key=False, use_list=True,
                              object_pairs_hook=_map)
    except _DuplicateKey:
        raise _bad(None, "a map in the request has the same key twice") from None
    except Exception:  # any malformed bytes: not msgpack, truncated, too deep, bad utf-8
        raise _bad(None, "the request is not a msgpack map") from None
    if not isinstance(msg, dict):
        raise _bad(None, "the request is not a msgpack map")
    raw_id = msg.get("id")
    req_id = raw_id if isinstance(raw_id, str) and 1 <= len(raw_id) <= 64 else None
    if "v" not in msg or "id" not in msg or "op" not in msg:
        missing = [k for k in ("v", "id", "op") if k not in msg]
        raise _bad(req_id, f"the envelope lacks {', '.join(missing)}")
    v = msg["v"]
    if not isinstance(v, int) or isinstance(v, bool):
        raise _bad(req_id, "v must be an integer")
    if v not in SUPPORTED:
        err = WireError("UNSUPPORTED_VERSION", f"protocol version {v} is not supported",
                        {"supported": SUPPORTED})
        err.req_id = req_id
        raise err
    if req_id is None:
        raise _bad(None, "id must be a string of 1..64 characters")
    op = msg["op"]
    if not isinstance(op, str) or not op:
        raise _bad(req_id, "op must be a non-empty string")
    args = msg.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise _bad(req_id, "args must be a map with string keys")
    extra = [k for k in msg if k not in _ENVELOPE]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise _bad(req_id, f"unknown envelope key {quote(extra[0])!r}{more}")
    return Envelope(req_id, op, args)


_ENVELOPE = frozenset({"v", "id", "op", "args"})


def _bad(req_id: str | None, message: str) -> WireError:
    err = WireError("BAD_REQUEST", message)
    err.req_id = req_id
    return err
