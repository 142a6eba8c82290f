"""What a ledger operation answers (`Outcome`) and the checks of its client keys."""

from __future__ import annotations

from typing import Any

import msgspec

from capflow.actors.model.errors import InvalidArgument
from capflow.actors.model.messages import Event

#: idempotency keys with this prefix are capflow's own and refused from clients
RESERVED_KEY_PREFIX = "capflow:"


#: the key of the transfer that holds a profile's allocation at creation
INITIAL_ALLOCATION_KEY = "capflow:profile.create"


class Outcome(msgspec.Struct):
    """What an accepted operation produced: its result and the events to persist."""

    result: Any
    events: list[Event]
    reused: bool = False
    #: what the answer adds that is not stored with the result (a signal's denial
    #: details, how its size was shrunk)
    detail: Any = None


def check_text(value: object, field: str, max_len: int = 128) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise InvalidArgument(field, f"{field} must be a non-empty string of at most "
                                     f"{max_len} characters")
    return value


def check_client_key(value: object) -> str:
    key = check_text(value, "client_request_id")
    if key.startswith(RESERVED_KEY_PREFIX):
        raise InvalidArgument("client_request_id", f"client_request_id may not start with "
                                                   f"{RESERVED_KEY_PREFIX!r}")
    return key
