"""What `CcxtSpotBroker` holds or spends at its venue beyond its positions, kept so that
a restart finds it again: the dust its exits left, and the fees it paid in a third coin.

**Dust** is what an exit leaves of a position below the venue's lot step: no order can
sell it, so it leaves the position at the exit's price (an exit fill ``<fill id>:dust``,
price and no fee) and the coins stay at the venue. The adapter keeps it per base coin
(`dust`), which reconciliation counts as capflow's, and `account.get` shows. Those fills
are stored like every other, so the dust is derived from them when the adapter connects
(`load_stored`): no table of its own, nothing to migrate.

**Fees in a third coin** (a fee token: MNT at Bybit, BNB at Binance) are booked on the
fill: its ``fee_coin`` and ``fee_coin_qty``, and as ``fee`` their value in the account's
money at the venue's price (`fee_value`: the bid of ``<coin>/<money>``, read on the
worker, kept a minute). When the venue lists no such market or does not answer, ``fee``
is 0: the coins are still recorded and counted, and the fill is logged. Reconciliation
counts them: the coin's balance is expected to be the baseline less every such fee the
account's stored fills paid (`fee_coins`, read back at connect and kept up to date).
"""

from __future__ import annotations

import time
from decimal import Decimal

from loguru import logger

from capflow.actors.model.money import ZERO, round_up
from capflow.actors.model.venue import qty_down
from capflow.brokers.events import BrokerPosition, PositionExited


def load_stored(b) -> None:
    """On the manager's thread, once the venue's rules are known: the dust of the exits
    and the third-coin fees stored before this run, added to what this run booked."""
    if b.dust_loaded or b.rows is None:
        return
    b.dust_loaded = True
    for coin, qty in b.rows.fee_coins(b.account_id).items():
        b.fee_coins[coin] = b.fee_coins.get(coin, ZERO) + Decimal(qty)
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


def note_fee_coin(b, e) -> None:
    """On the manager's thread: a fill reported with a fee in a third coin (a fill that
    cannot be booked has no fee to count)."""
    coin = getattr(e, "fee_coin", None)
    if coin is not None and e.fee_coin_qty:
        b.fee_coins[coin] = b.fee_coins.get(coin, ZERO) + e.fee_coin_qty


def fee_value(b, coin: str, qty: Decimal, fill_id: str) -> Decimal:
    """On the worker: `qty` of a third coin in the account's money at the venue's bid for
    ``<coin>/<money>`` (rounded up), or 0 when it has none."""
    import ccxt

    money = b.config.currency
    symbol = f"{coin}/{money}"
    cache = b.__dict__.setdefault("fee_prices", {})
    price, at = cache.get(coin, (None, 0.0))
    if at < time.monotonic() - 60:
        price = None
        try:
            if symbol in (b.client.markets or {}):
                ticker = b.client.fetch_ticker(symbol)
                quoted = ticker.get("bid") or ticker.get("last")
                price = Decimal(str(quoted)) if quoted else None
        except ccxt.BaseError as exc:
            logger.warning("pricing {} {} for a fee failed: {}", qty, coin, str(exc)[:200])
        cache[coin] = (price, time.monotonic() if price is not None else 0.0)
    if price is None:
        logger.warning("fill {}: fee of {} {} booked in that coin only: the venue has no "
                       "price of {}", fill_id, qty, coin, symbol)
        return ZERO
    return round_up(qty * price, b.money_places)


def _base(venue_symbol: str) -> str:
    return venue_symbol.split("/")[0]
