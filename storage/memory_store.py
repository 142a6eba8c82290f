"""Storage off: profiles and ledgers kept in memory only, nothing persisted (what the
`MemoryJournal` of storage/journal.py is told is kept here, or dropped).

For benchmarks (the cost of the actor layer without I/O) and throwaway embedding. The
ledger objects themselves are kept, so a passivated actor's successor continues where it
left off; only one actor owns a profile at a time, so handing the object over is safe.
"""

from __future__ import annotations

from decimal import Decimal

from capflow.actors.model.ledger import Ledger
from capflow.actors.model.messages import Buckets, Profile, Transfer
from capflow.actors.model.outcome import INITIAL_ALLOCATION_KEY


class MemoryLedgerStore:
    def __init__(self, places_for):
        self.places_for = places_for
        self._profiles: dict[str, Profile] = {}
        self._ledgers: dict[str, Ledger] = {}

    def profile_ids(self) -> list[str]:
        return list(self._profiles)

    def get_profile(self, profile_id: str) -> Profile | None:
        return self._profiles.get(profile_id)

    def list_profiles(self, after: str = "", limit: int = 1000, only=None) -> list[Profile]:
        ids = sorted(p for p in self._profiles if p > after and (only is None or p in only))
        return [self._profiles[p] for p in ids[:limit]]

    def add(self, profile: Profile, allocated: Decimal) -> None:
        """A new profile and its ledger (`MemoryJournal.create_profile`)."""
        self._profiles[profile.profile_id] = profile
        ledger = Ledger(profile.profile_id, profile.currency,
                        self.places_for(profile.currency))
        if allocated:
            ledger.allocated = allocated
            ledger.transfers[INITIAL_ALLOCATION_KEY] = Transfer(
                f"{profile.profile_id}:t1", INITIAL_ALLOCATION_KEY, allocated,
                profile.created_at)
        self._ledgers[profile.profile_id] = ledger

    def load(self, profile_id: str):
        if profile_id not in self._profiles:
            return None
        return self._profiles[profile_id], self._ledgers[profile_id]

    def ended_order(self, profile_id: str, order_id: str):
        return None  # the ledger object lives on, with the orders it ended

    def recent_closes(self, profile_id: str) -> list:
        return []  # the ledger object is kept, and its closes with it

    def snapshots(self, profile_ids: list[str] | None = None) -> dict[str, Buckets]:
        ids = self._ledgers if profile_ids is None else profile_ids
        return {pid: self._ledgers[pid].buckets() for pid in ids if pid in self._ledgers}

    def rebuild(self, profile_ids=None) -> dict[str, Buckets]:
        return {}

    def active_expiries(self):
        return []

    def global_state(self):
        return None
