"""The one small exception tree, the closed set of error codes, and denial values.

Invalid input and infrastructure failures are exceptions (`CapflowError` subclasses,
each with a stable `code`). Business denials -- not enough capital, a pre-trade check
that failed -- are values (`Denial`) returned by the domain; the API boundary turns them
into `Denied` for callers that prefer exceptions.
"""

from __future__ import annotations

from typing import Any

import msgspec

#: The closed set of error codes of the wire contract (docs/protocol.md, version 1).
CODES = frozenset({
    "BAD_REQUEST", "UNSUPPORTED_VERSION", "UNKNOWN_OP", "INVALID_ARGUMENT",
    "UNAUTHENTICATED", "FORBIDDEN", "NOT_FOUND", "CONFLICT", "INSUFFICIENT_CAPITAL",
    "RISK_REJECTED", "RATE_LIMITED", "TIMEOUT", "UNAVAILABLE", "INTERNAL",
})


class Denial(msgspec.Struct, frozen=True):
    """A business "no": a stable code, a human message, structured details."""

    code: str
    message: str
    details: dict[str, Any] = {}


class CapflowError(Exception):
    code = "INTERNAL"

    def __init__(self, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}: {self.message})"


class InvalidArgument(CapflowError):
    code = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str):
        super().__init__(message, {"field": field})
        self.field = field


class NotFound(CapflowError):
    code = "NOT_FOUND"

    def __init__(self, kind: str, ident: str):
        super().__init__(f"{kind} {ident!r} not found", {"kind": kind, "id": ident})


class Conflict(CapflowError):
    code = "CONFLICT"


class Unavailable(CapflowError):
    code = "UNAVAILABLE"


class Timeout(CapflowError):
    code = "TIMEOUT"


class Internal(CapflowError):
    code = "INTERNAL"


class Denied(CapflowError):
    """A `Denial` raised at the API boundary; `code` is the denial's code."""

    def __init__(self, denial: Denial):
        super().__init__(denial.message, dict(denial.details))
        self.code = denial.code
        self.denial = denial
