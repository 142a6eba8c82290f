"""`Journal`: everything the actors write, as verbs of the domain.

The shells (ledger actors, `System`, `Safety`) record what happened through these verbs
and never see rows, tables or transactions; storage/journal.py implements them over the
group-commit writer (and, storage off, in memory). Nothing is acknowledged before it is
committed: each verb takes an ``on_commit`` that runs once the write is durable and an
``on_fail`` that runs with the error (`Unavailable`) when it is not, or may not be.
Callbacks run on the writer's thread: they must only hand over, never block.

A profile's writes are ordered by ``seq`` (1, 2, ... as its owner submits them) within a
generation ``gen``: once one of them fails, its later writes of the same generation fail
too, and the profile's owner is told (`watch_failures`) so that it reloads what is
committed and goes on with the next generation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from capflow.actors.model.ledger import Ledger
    from capflow.actors.model.messages import Event, Profile
    from capflow.actors.model.risk import AccountState, GlobalState

OnCommit = Callable[[], None]
OnFail = Callable[[Exception], None]


class Journal(Protocol):
    @property
    def healthy(self) -> bool:
        """False from a write that failed as a whole until the next commit: storage is
        not reachable, and reads that must not be guessed answer UNAVAILABLE."""
        ...

    @property
    def fenced(self) -> str | None:
        """Why nothing can be written any more (another server took the database over),
        or None."""
        ...

    # -- a profile's ledger ----------------------------------------------------------

    def append(self, profile_id: str, events: Sequence[Event], ledger: Ledger, *,
               at: datetime, gen: int, seq: int, on_commit: OnCommit | None = None,
               on_fail: OnFail | None = None) -> None:
        """Record `events` of a profile (none: only its snapshot) with the ledger's
        snapshot as of now, taken at once and stamped `at`."""
        ...

    def barrier(self, profile_id: str, *, gen: int, seq: int,
                on_commit: OnCommit | None = None, on_fail: OnFail | None = None) -> None:
        """Write nothing: `on_commit` once the profile's earlier writes are committed,
        `on_fail` if one of them failed."""
        ...

    def done_seq(self, profile_id: str) -> int:
        """The seq of the profile's last write that is committed or failed."""
        ...

    def watch_failures(self, callback: Callable[[set[str]], None]) -> None:
        """Call `callback` with the profiles whose write failed (their owners reload)."""
        ...

    # -- profiles and the kill switch ------------------------------------------------

    def create_profile(self, profile: Profile, allocated: Decimal, *,
                       on_commit: OnCommit | None = None,
                       on_fail: OnFail | None = None) -> None:
        """A new profile with its ledger, holding `allocated` as its first deposit."""
        ...

    def set_global_state(self, state: GlobalState, *, on_commit: OnCommit | None = None,
                         on_fail: OnFail | None = None) -> None:
        """The global kill switch."""
        ...

    def set_account_state(self, account_id: str, state: AccountState,
                          saved: dict[str, Any] | None, *,
                          on_commit: OnCommit | None = None,
                          on_fail: OnFail | None = None) -> None:
        """A broker account's trading state, with its loss limits' saved references."""
        ...

    def record_flatten(self, key: str, scope: str, target: str | None, reason: str,
                       requested_by: str, created_at: datetime, result: dict[str, Any], *,
                       on_commit: OnCommit | None = None,
                       on_fail: OnFail | None = None) -> None:
        """A flatten done under `requested_by`'s `key`, and what it did."""
        ...

    # -- the journal as a whole ------------------------------------------------------

    def probe(self) -> None:
        """Check that storage answers (and is still ours); `healthy` follows."""
        ...

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted before is committed (True) or failed."""
        ...
