"""The journal (the domain's `capflow.actors.model.journal.Journal`) over storage.

`StorageJournal`: each verb becomes one request to the group-commit writer
(storage/writer.py), its rows built by storage/rows.py. `MemoryJournal`: storage off,
every write "commits" at once, in the caller's thread, and keeps nothing but new
profiles (in the `MemoryLedgerStore`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from capflow.actors.model.journal import OnCommit, OnFail
from capflow.actors.model.ledger import Ledger
from capflow.actors.model.messages import Event, Profile
from capflow.actors.model.risk import AccountState, GlobalState
from capflow.storage.memory_store import MemoryLedgerStore
from capflow.storage.rows import (
    account_state_row,
    flatten_row,
    global_state_row,
    profile_rows,
    rows_for,
    snapshot_row,
)
from capflow.storage.writer import StorageWriter, WriteRequest

__all__ = ["MemoryJournal", "StorageJournal"]


class StorageJournal:
    def __init__(self, writer: StorageWriter):
        self.writer = writer

    @property
    def healthy(self) -> bool:
        return self.writer.healthy

    @property
    def fenced(self) -> str | None:
        return self.writer.fenced

    def append(self, profile_id: str, events: Sequence[Event], ledger: Ledger, *,
               at: datetime, gen: int, seq: int, on_commit: OnCommit | None = None,
               on_fail: OnFail | None = None) -> None:
        self.writer.submit(WriteRequest(profile_id, rows_for(events), gen=gen, seq=seq,
                                        snapshot=snapshot_row(ledger, at),
                                        on_commit=on_commit, on_fail=on_fail))

    def barrier(self, profile_id: str, *, gen: int, seq: int,
                on_commit: OnCommit | None = None, on_fail: OnFail | None = None) -> None:
        self.writer.submit(WriteRequest(profile_id, [], gen=gen, seq=seq,
                                        on_commit=on_commit, on_fail=on_fail))

    def done_seq(self, profile_id: str) -> int:
        return self.writer.done_seq(profile_id)

    def watch_failures(self, callback: Callable[[set[str]], None]) -> None:
        self.writer.on_write_failed = callback

    # Written as no profile's: a failure bars no profile's later writes (a profile whose
    # creation failed is not known, so nothing of it is written after it).

    def create_profile(self, profile: Profile, allocated: Decimal, *,
                       on_commit: OnCommit | None = None,
                       on_fail: OnFail | None = None) -> None:
        self.writer.submit(WriteRequest(None, profile_rows(profile, allocated),
                                        on_commit=on_commit, on_fail=on_fail))

    def set_global_state(self, state: GlobalState, *, on_commit: OnCommit | None = None,
                         on_fail: OnFail | None = None) -> None:
        self.writer.submit(WriteRequest(None, [global_state_row(state)],
                                        on_commit=on_commit, on_fail=on_fail))

    def set_account_state(self, account_id: str, state: AccountState,
                          saved: dict[str, Any] | None, *,
                          on_commit: OnCommit | None = None,
                          on_fail: OnFail | None = None) -> None:
        self.writer.submit(WriteRequest(None, [account_state_row(account_id, state, saved)],
                                        on_commit=on_commit, on_fail=on_fail))

    def record_flatten(self, key: str, scope: str, target: str | None, reason: str,
                       requested_by: str, created_at: datetime, result: dict[str, Any], *,
                       on_commit: OnCommit | None = None,
                       on_fail: OnFail | None = None) -> None:
        row = flatten_row(key, scope, target, reason, requested_by, created_at, result)
        self.writer.submit(WriteRequest(None, [row], on_commit=on_commit, on_fail=on_fail))

    def probe(self) -> None:
        self.writer.probe()

    def flush(self, timeout: float = 30.0) -> bool:
        return self.writer.flush(timeout)


class MemoryJournal:
    """Storage off: nothing is persisted, every write commits at once. For benchmarks
    (the cost of the actor layer without I/O) and throwaway embedding."""

    healthy = True
    fenced = None

    def __init__(self, store: MemoryLedgerStore):
        self.store = store

    def append(self, profile_id: str, events: Sequence[Event], ledger: Ledger, *,
               at: datetime, gen: int, seq: int, on_commit: OnCommit | None = None,
               on_fail: OnFail | None = None) -> None:
        _commit(on_commit)

    def barrier(self, profile_id: str, *, gen: int, seq: int,
                on_commit: OnCommit | None = None, on_fail: OnFail | None = None) -> None:
        _commit(on_commit)

    def done_seq(self, profile_id: str) -> int:
        return 1 << 62

    def watch_failures(self, callback: Callable[[set[str]], None]) -> None:
        pass  # nothing fails

    def create_profile(self, profile: Profile, allocated: Decimal, *,
                       on_commit: OnCommit | None = None,
                       on_fail: OnFail | None = None) -> None:
        self.store.add(profile, allocated)
        _commit(on_commit)

    def set_global_state(self, state: GlobalState, *, on_commit: OnCommit | None = None,
                         on_fail: OnFail | None = None) -> None:
        _commit(on_commit)

    def set_account_state(self, account_id: str, state: AccountState,
                          saved: dict[str, Any] | None, *,
                          on_commit: OnCommit | None = None,
                          on_fail: OnFail | None = None) -> None:
        _commit(on_commit)

    def record_flatten(self, key: str, scope: str, target: str | None, reason: str,
                       requested_by: str, created_at: datetime, result: dict[str, Any], *,
                       on_commit: OnCommit | None = None,
                       on_fail: OnFail | None = None) -> None:
        _commit(on_commit)

    def probe(self) -> None:
        pass

    def flush(self, timeout: float = 30.0) -> bool:
        return True


def _commit(on_commit: OnCommit | None) -> None:
    if on_commit is not None:
        on_commit()
