"""The codec: exact values on the wire, and encoding that is safe from many threads."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime
from decimal import Decimal

import msgpack

from capflow.protocol.codec import ok_reply


def test_decimals_and_timestamps_are_strings():
    data = msgpack.unpackb(ok_reply("x", {"a": Decimal("1.50"), "t": datetime(
        2026, 11, 21, 10, 0, 0, 123456, tzinfo=UTC)}), raw=False)
    assert data["result"] == {"a": "1.50", "t": "2026-11-21T10:00:00.123456+00:00"}


def test_answers_encoded_by_many_threads_at_once_are_never_mixed_up():
    # answers are encoded in whichever actor or writer thread finishes a request
    corrupt = []
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible

    def worker(n: int) -> None:
        for i in range(3000):
            want = f"id-{n}-{i}"
            data = ok_reply(want, {"amount": Decimal(i), "ts": datetime.now(UTC), "n": n})
            try:
                got = msgpack.unpackb(data, raw=False)
            except Exception as exc:
                corrupt.append(repr(exc))
                continue
            if got["id"] != want or got["result"]["n"] != n:
                corrupt.append(got["id"])

    try:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert corrupt == []
