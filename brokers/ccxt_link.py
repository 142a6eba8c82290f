"""The line to the venue of a `CcxtSpotBroker` account: its ccxt client, the request
limits it keeps (`ccxt_limits`), and what happens when the line drops.

**Drops.** Polls that fail with network errors (``drop_after`` requests in a row: timeouts,
dropped lines, 5xx answers) mean the venue is not reachable: the worker stops polling and
reports it; on the account manager's thread the adapter then calls `connection_lost`
(``ConnectionFailed``: entries are refused with UNAVAILABLE, `system.health` is degraded
and a ``connection_lost`` alert is raised). Nothing is released: orders in flight keep
their capital reserved, and their outcome is found once the venue answers again. The
connection retries with its backoff; the first attempt the venue answers reconnects
(instruments, balance), polls resume and a reconciliation runs at once.
"""

from __future__ import annotations

import time

from capflow.brokers.base import WAITING
from capflow.brokers.ccxt_limits import DropCounter, Limiter


def make_client(b, creds):
    """A ccxt client for the account's settings, its requests going through the
    account's `Limiter`."""
    import ccxt

    s = b.settings
    client = getattr(ccxt, s.exchange)({
        **creds.ccxt(),
        "timeout": int(s.timeout_s * 1000), "enableRateLimit": True,
        "options": dict(b.dialect.options)})
    if s.sandbox:
        client.set_sandbox_mode(True)
    if s.urls:
        client.urls["api"] = {**client.urls["api"], **s.urls}
    b.limiter = Limiter(s.exchange, DropCounter(s.drop_after_errors,
                                                lambda reason: dropped(b, reason)))
    b.limiter.on_wait = b.worker.sends_first
    b.limiter.install(client)
    return client


def dropped(b, reason: str) -> None:
    """On the worker: the venue stopped answering. Polls stop (the reconnect attempts
    probe it) and the manager hears of it once."""
    if not b.worker.polling:
        return  # connecting: the attempt reports its own failure
    b.worker.polling = False
    b.worker.post(("lost", reason))


def idle(b) -> None:
    """On the worker, every poll interval while it does not poll: a connection waiting
    to retry is stepped (the account manager steps it only when woken)."""
    if b.connection.state == WAITING:
        b.worker.wake()


def lost(b, reason: str) -> None:
    """On the account manager's thread: the established connection dropped."""
    if b.connected:
        b.connection_lost(f"the venue stopped answering: {reason}")


def connected(b) -> None:
    """On the worker, once a (re)connect succeeded: polls resume, and a
    reconciliation runs at once when capflow's side is restored (the first `reconcile`
    says so; at the first connect it comes later)."""
    from capflow.brokers.ccxt_reconcile import take_cut

    b.worker.polling = True
    if b._ready:
        every = b.settings.reconcile_every_s
        b._next_reconcile = time.monotonic() + (every if every > 0 else float("inf"))
        take_cut(b)
    else:
        b._next_reconcile = 0.0  # at connect: the first poll reconciles
