"""What a live adapter reports when it has reconciled its venue account with capflow's
rows (`Reconciled`), and the hooks it reads those rows through (`BookedRows`).

A reconciliation compares, at one cut, the venue's balances, open orders and fills with
what capflow holds; its report (`Reconciled.report`, a plain map) lists both sides:

- ``balances``: per coin, ``venue`` (total, free, locked), ``capflow`` (what its open
  positions and dust hold, less the fees paid in it as a third coin; the account's
  currency: its capital), ``locked`` (``orders``: what the open orders should lock,
  ``difference``, ``status``), ``baseline`` (held at
  the venue but not capflow's), ``difference`` and ``status`` -- ``ok``, ``differs``,
  ``in_flight`` (an order of that coin was sent and not answered, or filled at the venue
  and not yet seen: not a difference) or ``cash`` (the account's currency, whose venue
  balance less its baseline becomes the account's capital);
- ``unknown_orders``: orders open at the venue that capflow did not send;
- ``missed_fills``: fills of capflow's orders it had not booked (booked now, once);
- ``unknown_fills``: fills at the venue of orders capflow did not send;
- ``in_flight``: the client order ids sent and not answered at the cut;
- ``differences``: how many differences nothing explains (0: the account agrees);
- ``capital``: the account's cash at the venue less its baseline, plus what its open
  positions cost: what its profiles may be allocated (capped by ``max_live_capital``).

The manager (`actors.account_reconcile`) keeps the last report, sets the account's
capital from it, and puts the account in ``REDUCE_ONLY`` with an alert on a difference.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

import msgspec


class Reconciled(msgspec.Struct, frozen=True, kw_only=True):
    """A reconciliation's report (see the module docstring); `error` when the venue
    could not be read (the report then holds nothing and changes nothing). The adapter
    emits it like its events; it is the account manager's alone (no event topic: an
    alert tells of differences)."""

    account_id: str
    ts: datetime
    report: dict[str, Any]
    error: str | None = None
    #: the `reconcile()` request whose cut this is (its number), 0 for a periodic one: a
    #: cut taken before a request was made does not answer it
    asked: int = 0


class BookedRows(Protocol):
    """What a reconciliation reads of capflow's stored rows (set on the adapter by its
    account manager as ``adapter.rows``)."""

    def booked_fills(self, fill_ids: list[str]) -> set[str]:
        """Those of `fill_ids` that are stored (booked and committed)."""

    def find_order(self, order_id: str) -> tuple[str, Any] | None:
        """(profile_id, order) of a stored order, or None."""

    def find_position(self, position_id: str) -> tuple[str, Any] | None:
        """(profile_id, position) of a stored position, or None."""

    def fee_coins(self, account_id: str) -> dict[str, Any]:
        """Coin -> the fees the account's fills paid in a third coin (``fee_coin``)."""

    def dust(self, account_id: str, exchange: str) -> dict[str, Any]:
        """Symbol -> the dust the account's exits booked (``<exchange>:...:dust``)."""
