"""What `CcxtSpotBroker` holds at its venue beyond its positions, kept so that a restart
finds it again: the dust its exits left.

**Dust** is what an exit leaves of a position below the venue's lot step: no order can
sell it, so it leaves the position at the exit's price (an exit fill ``<fill id>:dust``,
price and no fee) and the coins stay at the venue. The adapter keeps it per base coin
(`dust`), which reconciliation counts as capflow's, and `account.get` shows. Those fills
are stored like every other, so the dust is derived from them when the adapter connects
(`load_dust`): no table of its own, nothing to migrate.
"""

from __future__ import annotations

from decimal import Decimal

from loguru import logger

from capflow.actors.model.money import ZERO
from capflow.actors.model.venue import qty_down
from capflow.brokers.base import BrokerPosition, PositionExited


def load_dust(b) -> None:
    """On the manager's thread, once the venue's rules are known: the dust of the exits
    stored before this run, added to what this run booked already."""
    if b.dust_loaded or b.rows is None:
        return
    b.dust_loaded = True
    stored = b.rows.dust(b.account_id, b.settings.exchange)
    for symbol, qty in stored.items():
        rule = b.venue_rules.rules.get(symbol)
        coin = _base(rule.venue_symbol if rule is not None else symbol)
        b.dust[coin] = b.dust.get(coin, ZERO) + Decimal(qty)
    if stored:
        logger.info("account {}: dust left by exits before: {}", b.account_id, b.dust)


def book_dust(b, p: BrokerPosition, e: PositionExited) -> bool:
    """After an exit fill left `p`: when what is left is below the lot step, book it out
    of the position at the exit's price as dust (True: the position is gone)."""
    rule = b.venue_rules.rules.get(p.symbol)
    if rule is None or qty_down(p.qty, rule) >= max(rule.min_qty, rule.qty_step):
        return False
    coin = _base(rule.venue_symbol)
    b.dust[coin] = b.dust.get(coin, ZERO) + p.qty
    logger.info("position {}: {} {} left below the lot step is dust", p.position_id, p.qty,
                coin)
    del b.positions[p.position_id]
    b.emit(PositionExited(account_id=b.account_id, ts=b.clock.now(),
                          position_id=p.position_id, profile_id=p.profile_id,
                          fill_id=f"{e.fill_id}:dust", qty=p.qty, price=e.price, fee=ZERO,
                          reason=e.reason))
    return True


def _base(venue_symbol: str) -> str:
    return venue_symbol.split("/")[0]
