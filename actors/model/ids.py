"""Server-made ids."""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    """A server-made id: time-ordered (new rows land at the end of the primary-key
    index instead of on random pages) and unique (48 random bits per nanosecond)."""
    return f"{prefix}_{time.time_ns():016x}{secrets.token_hex(6)}"
