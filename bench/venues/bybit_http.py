"""The HTTP side of the Bybit emulator (`bench/venues/bybit.py`): the record of each
request, the switchable faults, and the request handler that applies them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from .bybit_book import VenueError

if TYPE_CHECKING:
    from .bybit import BybitVenue


@dataclass
class Recorded:
    """One request as the venue received it, with how it was answered."""

    method: str
    path: str
    raw_query: str
    query: dict[str, str]
    raw_body: str
    body: object
    headers: dict[str, str]
    at: int
    status: int | None = None  # None: no answer was sent (a lost answer, a dropped line)
    ret_code: int | None = None

    def header(self, name: str) -> str | None:
        lower = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lower), None)


@dataclass
class Fault:
    kind: str
    times: int
    options: dict = field(default_factory=dict)


FAULT_KINDS = ("http", "ratelimit", "reject", "lose", "drop")


class Handler(BaseHTTPRequestHandler):
    """One HTTP request: record it, apply a switched-on fault, answer it."""

    venue: BybitVenue  # set on a subclass per venue
    server_version = "bybit-emulator"

    def do_GET(self):
        self._serve()

    def do_POST(self):
        self._serve()

    def log_message(self, format, *args):
        pass

    def _serve(self):
        venue = self.venue
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = raw_body
        rec = Recorded(self.command, parts.path, parts.query, dict(parse_qsl(parts.query)),
                       raw_body, body, dict(self.headers.items()), venue.now_ms())
        venue.note(rec)
        fault = venue.take_fault(parts.path)
        kind = fault.kind if fault else None
        opts = fault.options if fault else {}
        if kind == "drop":
            self.close_connection = True
            return
        if kind == "http":
            status = int(opts.get("status", 503))
            self._send(rec, status, b"<html><body>" + str(status).encode() + b"</body></html>",
                       "text/html")
            return
        if kind == "ratelimit":  # with the time the limit resets at, as Bybit says it
            status = opts.get("status")
            reset = {"X-Bapi-Limit-Reset-Timestamp":
                     str(venue.now_ms() + int(opts.get("reset_in_ms", 1000)))}
            if status is not None:
                self._send(rec, int(status), b"Too Many Visits", "text/plain", reset)
            else:
                self._json(rec, 200, venue.envelope(10006, "Too many visits!", {}), reset)
            return
        if kind == "reject":
            self._json(rec, 200, venue.envelope(int(opts.get("code", 10001)),
                                                 str(opts.get("msg", "rejected")), {}))
            return
        status, answer = venue.answer(rec)
        if kind == "lose":
            if rec.ret_code is None and answer is not None:
                rec.ret_code = venue.code_of(answer)  # what it would have said
            venue.pause(float(opts.get("delay", 2.0)))
            self.close_connection = True
            return
        if answer is None:
            self._send(rec, status, b"404 page not found", "text/plain")
        else:
            self._json(rec, status, answer)

    def _json(self, rec: Recorded, status: int, answer: dict, headers: dict | None = None):
        rec.ret_code = self.venue.code_of(answer)
        self._send(rec, status, json.dumps(answer).encode(), "application/json", headers)

    def _send(self, rec: Recorded, status: int, payload: bytes, ctype: str,
              headers: dict | None = None):
        rec.status = status
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def spot_only(params):
    """VenueError unless the request names category=spot."""
    if params.get("category") != "spot":
        raise VenueError(10001, "This emulator serves category=spot only.")


def matching(orders: list, params) -> list:
    """The orders of the symbol the request names (all without one)."""
    symbol = params.get("symbol")
    return [o for o in orders if symbol in (None, o.symbol)]


def since(items: list, params, stamp) -> list:
    """The items whose `stamp` is within the request's startTime..endTime (ms)."""
    try:
        start = int(params.get("startTime", 0))
        end = int(params.get("endTime", 2**62))
    except ValueError:
        raise VenueError(10001, "params error: startTime or endTime invalid") from None
    return [x for x in items if start <= stamp(x) <= end]
