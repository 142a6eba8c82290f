"""The data of `capflow stats` and `capflow report`, by the one rule of capflow.cli: all
of it through the server that answers at the endpoint, or all of it from the storage
when none answers. Never a mix: through a server, the positions and statistics come
from it, the currency from its `profile.get` / `profile.list` and the open positions'
prices from its `market.price`; from the storage, the last stored fill prices them (no
server was there to ask) and nothing is created (capflow.cli.route refuses to read a
storage that is not there).
"""

from __future__ import annotations

import argparse
from decimal import Decimal
from typing import Any, NamedTuple

from capflow.actors.config import Config
from capflow.cli import PAGE, all_profiles, route


class Data(NamedTuple):
    """What `stats` and `report` show. `stats`: a `Stats`, or the map of `stats.get`;
    `currency`: the profiles' currency, their currencies joined by '+' when they differ;
    `marks`: a price per symbol held open (report only)."""

    positions: list
    stats: Any
    groups: dict | None
    initial: Decimal | None
    currency: str
    marks: dict


def stats_data(cfg: Config, args: argparse.Namespace, profile: str | None,
               group_by: str | None = None) -> Data:
    """The data of `args.command` (``stats`` or ``report``) of one profile or all."""
    report = args.command == "report"
    client = route(cfg, args, f"capflow {args.command}",
                   None if report else "capflow call stats.get")
    if client is None:
        return _in_storage(cfg, profile, group_by, marks=report)
    with client:
        return _through(client, profile, group_by, report=report,
                        default_currency=cfg.ledger.default_currency)


def _currency(currencies, default: str) -> str:
    return "+".join(sorted(set(currencies))) or default


def _through(client, profile: str | None, group_by: str | None, *, report: bool,
             default_currency: str) -> Data:
    """`stats.get`; for the report, the positions themselves (and the statistics
    computed from them, as the server computes them) and their prices by `market.price`,
    all from the server of `client`."""
    from capflow.actors.model.stats import profiles_stats

    profiles = [client.profile_get(profile)] if profile else all_profiles(client)
    currency = _currency((p["currency"] for p in profiles), default_currency)
    if not report:
        ask = {k: v for k, v in (("profile_id", profile), ("group_by", group_by)) if v}
        stats = client.call("stats.get", **ask)
        return Data([], stats, stats.pop("groups", None), None, currency, {})
    found = []
    allocations = [Decimal((p.get("ledger") or {}).get("allocated") or 0) for p in profiles]
    for p in profiles:
        cursor = None
        while True:
            page = client.call("position.list", **{
                "profile_id": p["profile_id"], "limit": PAGE,
                **({"cursor": cursor} if cursor else {})})
            found += [_position(x) for x in page["positions"]]
            cursor = page.get("next_cursor")
            if not cursor or not page["positions"]:
                break
    stats, groups, initial = profiles_stats(found, allocations, group_by)
    return Data(found, stats, groups, initial, currency, _server_marks(client, found))


def _server_marks(client, positions) -> dict:
    """A price for each symbol held open, by the server's `market.price` (a symbol it
    has no price for is left out: the report then uses the entry price)."""
    from capflow.actors.model.stats import MARK_SERVER, Mark
    from capflow.protocol.client import ClientError

    marks = {}
    for symbol in sorted({p.symbol for p in positions if p.status == "OPEN"}):
        try:
            last = client.call("market.price", symbol=symbol)["last"]
        except ClientError as exc:
            if exc.code == "TIMEOUT":
                raise
            continue  # no price for this symbol there (NOT_FOUND, ...)
        marks[symbol] = Mark(Decimal(last), MARK_SERVER)
    return marks


def _position(p: dict[str, Any]):
    """A position map of the wire as the statistics read it (Decimal, datetime)."""
    from datetime import datetime
    from types import SimpleNamespace

    def when(v):
        return None if v is None else datetime.fromisoformat(v)

    def number(v):
        return None if v is None else Decimal(v)

    return SimpleNamespace(**{**p, **{k: number(p.get(k)) for k in _POSITION_DECIMALS},
                              "opened_at": when(p["opened_at"]),
                              "closed_at": when(p["closed_at"])})


#: the decimal fields of a position on the wire that the statistics and the report read
_POSITION_DECIMALS = ("qty_open", "qty_total", "reserved", "entry_notional", "entry_price",
                      "exit_price", "exit_notional", "realized_pnl", "fees", "net_pnl")


def _in_storage(cfg: Config, profile: str | None, group_by: str | None, *,
                marks: bool) -> Data:
    """Positions, statistics and currency straight from storage, and (`marks`) the last
    stored fill of each symbol held open: no actors (the caller made sure that no other
    process owns the storage, and that it is there)."""
    from capflow.actors.model.errors import NotFound
    from capflow.actors.model.stats import MARK_FILL, Mark, profiles_stats
    from capflow.storage.engine import open_engine
    from capflow.storage.ledger_store import LedgerStore
    from capflow.storage.oms_store import OmsStore

    engine = open_engine(cfg.storage.url, synchronous=cfg.storage.sqlite_synchronous,
                         create=False)
    try:
        ledgers = LedgerStore(engine, cfg.places)
        ids = None if profile is None else [profile]
        if profile is not None and ledgers.get_profile(profile) is None:
            raise NotFound("profile", profile)
        allocations = [b.allocated for b in ledgers.snapshots(ids).values()]
        positions = OmsStore(engine).positions_for_stats(ids)
        currency = _currency(ledgers.currencies(ids), cfg.ledger.default_currency)
        held = sorted({p.symbol for p in positions if p.status == "OPEN"})
        stored = OmsStore(engine).last_fills(held) if marks and held else {}
    finally:
        engine.dispose()
    stats, groups, initial = profiles_stats(positions, allocations, group_by)
    prices = {x: Mark(price, MARK_FILL, ts) for x, (price, ts) in stored.items()}
    return Data(positions, stats, groups, initial, currency, prices)
