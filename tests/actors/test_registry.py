"""Many profiles: activation on first use keeps the number of live actors bounded."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pykka

from capflow.actors.ledger_actor import LedgerActor
from capflow.actors.model.messages import Profile
from capflow.actors.reply import Reply

N_PROFILES = 20_000
MAX_LIVE = 64


def _bulk_create(system, n: int) -> list[str]:
    """Create n profiles through the journal in a few transactions (test set-up)."""
    now = system.clock.now()
    ids = [f"bot-{i:05d}" for i in range(n)]
    replies = []
    for pid in ids:
        reply = Reply()
        system.journal.create_profile(
            Profile(pid, "USDT", None, None, "ACTIVE", "", "test", now, now), Decimal("100.00"),
            on_commit=lambda r=reply: r.resolve(1), on_fail=reply.fail)
        replies.append(reply)
    for reply in replies:
        reply.get(60)
    system.registry.add_known(ids)
    return ids


def test_20000_profiles_activated_one_after_another_stay_within_max_live(make_system,
                                                                          sqlite_url):
    system = make_system(sqlite_url, ledger={"max_live": MAX_LIVE})
    ids = _bulk_create(system, N_PROFILES)
    baseline_threads = threading.active_count()
    peak_live = peak_threads = 0
    for i, pid in enumerate(ids):
        assert system.ledger(pid).available == Decimal("100.00")
        if i % 500 == 0:
            peak_live = max(peak_live, system.registry.live_count())
            peak_threads = max(peak_threads, threading.active_count())
    assert system.registry.activations == N_PROFILES
    assert system.registry.live_count() <= MAX_LIVE
    assert peak_live <= MAX_LIVE
    # retiring actors finish their last writes and stop shortly after being passivated
    deadline = time.monotonic() + 10
    while (len(pykka.ActorRegistry.get_by_class(LedgerActor)) > MAX_LIVE
           and time.monotonic() < deadline):
        time.sleep(0.05)
    assert len(pykka.ActorRegistry.get_by_class(LedgerActor)) <= MAX_LIVE
    # threads: the live actors plus those passivated but still exiting; never one per
    # profile (20,000)
    assert peak_threads <= baseline_threads + 2 * MAX_LIVE
    # state survived passivation: the first profile comes back with its capital
    system.reserve(ids[0], "X", "40", "k")
    assert system.ledger(ids[0]).available == Decimal("60.00")
