"""The actor layer: one `LedgerActor` per profile around the pure `Ledger`, the registry
that activates and passivates them, the timer thread, and `System`, the embedded API."""
