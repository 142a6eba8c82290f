"""Server-made ids."""

from __future__ import annotations

import os
import random
import time

#: the random part of ids. Ids need to be unique, not secret (they are shown to every
#: client that reads the row), so a generator seeded from the OS does: asking the OS for
#: six bytes per id (`secrets`) was a system call on every order. A forked child reseeds,
#: so parent and child never draw the same sequence.
_random = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))


def new_id(prefix: str) -> str:
    """A server-made id: time-ordered (new rows land at the end of the primary-key
    index instead of on random pages) and unique (48 random bits per nanosecond)."""
    return f"{prefix}_{time.time_ns():016x}{_random.getrandbits(48):012x}"
