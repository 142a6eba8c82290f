"""The JSON rows the Bitget emulator (`bench/venues/bitget.py`) answers with, in Bitget's v2
spot shapes (https://www.bitget.com/api-doc/spot/ : Get Symbol Info, Get Ticker
Information, Get Account Assets, Get Order Info, Get Current Orders, Get History Orders,
Get Fills; and the sample answers in the comments of ccxt 4.5's bitget.py, which also show
which fields ccxt reads). Numbers are strings, times milliseconds as strings.

The book behind it is the Bybit emulator's (`bybit_book.py`); its states and sides are
translated here: ``New`` -> ``live``, ``PartiallyFilled`` -> ``partially_filled``,
``Filled`` -> ``filled``, any ended rest -> ``cancelled``; ``Buy`` -> ``buy``.
"""

from __future__ import annotations

import json
from decimal import Decimal

from .bybit_book import Balance, Execution, Instrument, Order, Quote, text

STATUS = {"New": "live", "PartiallyFilled": "partially_filled", "Filled": "filled",
          "Cancelled": "cancelled", "PartiallyFilledCanceled": "cancelled",
          "Rejected": "cancelled"}
FORCE = {"GTC": "gtc", "IOC": "ioc", "FOK": "fok", "PostOnly": "post_only"}


def places(step: Decimal) -> str:
    """A step (0.01) as Bitget states a precision: the number of decimals ("2")."""
    return str(max(0, -step.normalize().as_tuple().exponent))


def symbol_row(inst: Instrument, fee: Decimal) -> dict:
    return {
        "symbol": inst.symbol, "baseCoin": inst.base, "quoteCoin": inst.quote,
        "minTradeAmount": text(inst.min_qty), "maxTradeAmount": text(inst.max_qty),
        "takerFeeRate": text(fee), "makerFeeRate": text(fee),
        "pricePrecision": places(inst.tick), "quantityPrecision": places(inst.base_precision),
        "quotePrecision": places(inst.quote_precision),
        "status": "online" if inst.status == "Trading" else "offline",
        "minTradeUSDT": text(inst.min_amt), "buyLimitPriceRatio": "0.05",
        "sellLimitPriceRatio": "0.05", "areaSymbol": "no", "orderQuantity": "200",
        "openTime": "1532454360000", "offTime": "",
    }


def ticker_row(symbol: str, q: Quote, now: int) -> dict:
    return {
        "symbol": symbol, "open": text(q.last), "high24h": text(q.last),
        "low24h": text(q.last), "lastPr": text(q.last), "quoteVolume": "0",
        "baseVolume": "0", "usdtVolume": "0", "ts": str(now), "bidPr": text(q.bid),
        "askPr": text(q.ask), "bidSz": _size(q.bid_size), "askSz": _size(q.ask_size),
        "openUtc": text(q.last), "changeUtc24h": "0", "change24h": "0",
    }


def _size(value: Decimal | None) -> str:
    return "1000000" if value is None else text(value)


def asset_row(coin: str, b: Balance, now: int) -> dict:
    # what working orders hold is "frozen"; "locked" is for fiat merchants (always 0 here)
    return {"coin": coin, "available": text(b.free), "frozen": text(b.locked),
            "locked": "0", "limitAvailable": "0", "uTime": str(now)}


def coin_rows(coins: list[str]) -> list[dict]:
    return [{"coinId": str(n), "coin": c, "transfer": "true", "areaCoin": "no", "chains": [{
        "chain": c, "needTag": "false", "withdrawable": "true", "rechargeable": "true",
        "withdrawFee": "0", "extraWithdrawFee": "0", "depositConfirm": "1",
        "withdrawConfirm": "1", "minDepositAmount": "0", "minWithdrawAmount": "0",
        "browserUrl": "", "contractAddress": "", "withdrawStep": "0",
        "withdrawMinScale": "8", "congestion": "normal"}]} for n, c in enumerate(coins, 1)]


def order_row(o: Order) -> dict:
    avg = o.cum_value / o.cum_qty if o.cum_qty else Decimal(0)
    fees = {"newFees": {"c": 0, "d": 0, "deduction": False, "r": -float(o.cum_fee),
                        "t": -float(o.cum_fee), "totalDeductionFee": 0}}
    if o.fee_coin:
        # ccxt reads the fee from here; a string, as Bitget sends it
        fees[o.fee_coin] = {"deduction": False, "feeCoinCode": o.fee_coin,
                            "totalDeductionFee": 0, "totalFee": "-" + text(o.cum_fee)}
    return {
        "userId": "1", "symbol": o.symbol, "orderId": o.order_id, "clientOid": o.link_id,
        "price": text(o.price), "size": text(o.qty), "orderType": o.order_type.lower(),
        "side": o.side.lower(), "status": STATUS[o.status], "priceAvg": text(avg),
        "baseVolume": text(o.cum_qty), "quoteVolume": text(o.cum_value),
        "enterPointSource": "API", "orderSource": "normal", "force": FORCE[o.tif],
        "cTime": str(o.created), "uTime": str(o.updated),
        "feeDetail": json.dumps(fees) if o.cum_qty else "", "triggerPrice": None,
        "tpslType": "normal", "cancelReason": "" if o.is_open else o.reject_reason,
        "quoteCoin": "", "baseCoin": "",
    }


def fill_row(e: Execution) -> dict:
    o = e.order
    return {
        "userId": "1", "symbol": o.symbol, "orderId": o.order_id, "tradeId": e.exec_id,
        "orderType": o.order_type.lower(), "side": o.side.lower(),
        "priceAvg": text(e.price), "size": text(e.qty), "amount": text(e.qty * e.price),
        "feeDetail": {"deduction": "no", "feeCoin": e.fee_coin, "totalDeductionFee": "",
                      "totalFee": "-" + text(e.fee)},
        "tradeScope": "maker" if e.is_maker else "taker",
        "cTime": str(e.time), "uTime": str(e.time),
    }
