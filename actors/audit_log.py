"""The signal audit log: every signal received, one JSON line each, append-only.

A line is written (and flushed to the operating system) before the signal is acted on,
so a signal that was answered is in the log; what capflow decided about it is in the
database (the `signals` table for signals with an id, the orders it opened). The file
is rotated by size: ``signals.jsonl`` -> ``signals.jsonl.1`` -> ... up to `backups`
files; the oldest is dropped.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Any

import msgspec

_encode = msgspec.json.Encoder(decimal_format="string").encode


def _faithful(value: Any) -> Any:
    """JSON has no NaN or infinity (an encoder writes null for them): keep what was sent
    as the text Python writes for it ("nan", "inf", "-inf"), so the log shows it."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _faithful(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_faithful(v) for v in value]
    return value


class SignalAuditLog:
    def __init__(self, path: str | Path, max_bytes: int = 50 << 20, backups: int = 10):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = max(1, backups)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 -- kept open, closed in close()
        self._size = self._file.tell()
        self.lines = 0

    def write(self, record: dict[str, Any]) -> None:
        line = _encode(_faithful(record)) + b"\n"
        with self._lock:
            if self._file is None:
                raise ValueError("the signal audit log is closed")
            if self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            self._file.write(line)
            self._file.flush()
            self._size += len(line)
            self.lines += 1

    def _rotate(self) -> None:
        self._file.close()
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._file = open(self.path, "ab")  # noqa: SIM115
        self._size = 0

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
