"""The answers kept for repeated request ids, bounded by age, count and bytes.

An answer is kept under (client identity, request id) for `ttl_s` at least, as long as
the cache stays within its budgets: at most `max_entries` answers and `max_bytes` bytes
in all, and `client_max_bytes` bytes per client, so that one client cannot push out
everybody else's answers. Past a budget the oldest answers go first (the client's own
oldest for its share); an answer larger than a client's share is not kept at all. Used
by the gateway's socket thread only: no lock.

Sizes are the answer's bytes plus a fixed allowance per entry for the keys and the
bookkeeping (`ENTRY_OVERHEAD`, measured with tracemalloc on CPython 3.11), so the byte
count tracks the memory the cache holds.
"""

from __future__ import annotations

from collections import OrderedDict

#: bytes per entry beyond the answer and the id: the key tuple, the id's str header, the
#: value tuple, and a node in each of the two ordered maps
ENTRY_OVERHEAD = 400

Key = tuple[bytes, str]


class ReplyCache:
    def __init__(self, ttl_s: float, max_entries: int, max_bytes: int,
                 client_max_bytes: int):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.client_max_bytes = client_max_bytes
        #: (client, id) -> (answer, stored at, size), oldest first
        self._entries: OrderedDict[Key, tuple[bytes, float, int]] = OrderedDict()
        #: client -> its ids, oldest first, and its bytes
        self._clients: dict[bytes, _Share] = {}
        self.bytes = 0
        #: answers dropped by a budget before their time was up
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> bytes | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: Key, data: bytes, now: float) -> None:
        self._drop(key)
        size = len(data) + len(key[1]) + ENTRY_OVERHEAD
        share = self._clients.get(key[0])
        if share is None:
            share = self._clients[key[0]] = _Share()
        self._entries[key] = (data, now, size)
        share.ids[key[1]] = None
        share.bytes += size
        self.bytes += size
        while share.bytes > self.client_max_bytes:
            self._evict((key[0], next(iter(share.ids))))
        while self._entries and (self.bytes > self.max_bytes
                                 or len(self._entries) > self.max_entries):
            self._evict(next(iter(self._entries)))
        self.expire(now)

    def expire(self, now: float) -> None:
        """Drop the answers older than `ttl_s`."""
        entries = self._entries
        while entries:
            key, (_, stored, _) = next(iter(entries.items()))
            if now - stored <= self.ttl_s:
                return
            self._drop(key)

    def _evict(self, key: Key) -> None:
        if self._drop(key):
            self.evicted += 1

    def _drop(self, key: Key) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        size = entry[2]
        self.bytes -= size
        share = self._clients[key[0]]
        del share.ids[key[1]]
        share.bytes -= size
        if not share.ids:
            del self._clients[key[0]]
        return True


class _Share:
    __slots__ = ("bytes", "ids")

    def __init__(self):
        self.ids: OrderedDict[str, None] = OrderedDict()
        self.bytes = 0
