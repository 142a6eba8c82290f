"""The JSON rows the Bybit emulator answers with, in Bybit v5's documented shapes (spot,
unified account). Numbers are strings, times are milliseconds as strings, as Bybit sends.

Two fields are left out on purpose, as Bybit's spot answers leave them out and ccxt reads
their presence as "a derivative": ``tpslMode`` on orders and ``createType`` on executions.
"""

from __future__ import annotations

from decimal import Decimal

from .bybit_book import Balance, Execution, Instrument, Order, Quote, text


def instrument_row(inst: Instrument) -> dict:
    return {
        "symbol": inst.symbol, "baseCoin": inst.base, "quoteCoin": inst.quote,
        "innovation": "0", "status": inst.status, "marginTrading": "utaOnly", "stTag": "0",
        "lotSizeFilter": {
            "basePrecision": text(inst.base_precision),
            "quotePrecision": text(inst.quote_precision),
            "minOrderQty": text(inst.min_qty), "maxOrderQty": text(inst.max_qty),
            "minOrderAmt": text(inst.min_amt), "maxOrderAmt": text(inst.max_amt),
        },
        "priceFilter": {"tickSize": text(inst.tick)},
        "riskParameters": {"priceLimitRatioX": "0.01", "priceLimitRatioY": "0.02"},
    }


def ticker_row(symbol: str, q: Quote) -> dict:
    return {
        "symbol": symbol, "bid1Price": text(q.bid), "bid1Size": _size(q.bid_size),
        "ask1Price": text(q.ask), "ask1Size": _size(q.ask_size), "lastPrice": text(q.last),
        "prevPrice24h": text(q.last), "price24hPcnt": "0", "highPrice24h": text(q.last),
        "lowPrice24h": text(q.last), "turnover24h": "0", "volume24h": "0",
        "usdIndexPrice": text(q.last),
    }


def _size(value: Decimal | None) -> str:
    return "1000000" if value is None else text(value)


def wallet_row(balances: dict[str, Balance], quotes: dict[str, Quote]) -> dict:
    coins = []
    total_usd = Decimal(0)
    for coin, b in sorted(balances.items()):
        usd = _usd_value(coin, b.total, quotes)
        total_usd += usd
        coins.append({
            "coin": coin, "equity": text(b.total), "usdValue": text(usd),
            "walletBalance": text(b.total), "locked": text(b.locked),
            # deprecated for unified accounts (Bybit answers ""): ccxt then derives
            # free as walletBalance minus locked
            "availableToWithdraw": "", "availableToBorrow": "", "borrowAmount": "0",
            "accruedInterest": "0", "totalOrderIM": "0", "totalPositionIM": "0",
            "totalPositionMM": "0", "unrealisedPnl": "0", "cumRealisedPnl": "0",
            "bonus": "0", "collateralSwitch": True, "marginCollateral": True,
            "spotHedgingQty": "0",
        })
    total = text(total_usd)
    return {
        "accountType": "UNIFIED", "totalEquity": total, "totalWalletBalance": total,
        "totalMarginBalance": total, "totalAvailableBalance": total, "totalPerpUPL": "0",
        "totalInitialMargin": "0", "totalMaintenanceMargin": "0", "accountIMRate": "0",
        "accountMMRate": "0", "accountLTV": "0", "coin": coins,
    }


def _usd_value(coin: str, amount: Decimal, quotes: dict[str, Quote]) -> Decimal:
    if coin in ("USDT", "USDC"):
        return amount
    quote = quotes.get(coin + "USDT")
    return amount * quote.last if quote is not None else Decimal(0)


def coin_rows(coins: list[str]) -> list[dict]:
    return [{"name": c, "coin": c, "remainAmount": "1000000", "chains": [{
        "chainType": c, "confirmation": "6", "withdrawFee": "0", "depositMin": "0",
        "withdrawMin": "0", "chain": c, "chainDeposit": "1", "chainWithdraw": "1",
        "minAccuracy": "8", "withdrawPercentageFee": "0"}]} for c in coins]


def order_row(o: Order) -> dict:
    avg = o.cum_value / o.cum_qty if o.cum_qty else Decimal(0)
    leaves_value = o.leaves * o.price if not o.in_quote else o.leaves
    return {
        "orderId": o.order_id, "orderLinkId": o.link_id, "blockTradeId": "",
        "symbol": o.symbol, "price": text(o.price), "qty": text(o.qty), "side": o.side,
        "isLeverage": "0", "positionIdx": 0, "orderStatus": o.status,
        "cancelType": o.cancel_type, "rejectReason": o.reject_reason,
        "avgPrice": text(avg), "leavesQty": text(o.leaves if not o.in_quote else Decimal(0)),
        "leavesValue": text(leaves_value), "cumExecQty": text(o.cum_qty),
        "cumExecValue": text(o.cum_value), "cumExecFee": text(o.cum_fee),
        "cumFeeDetail": {o.fee_coin: text(o.cum_fee)} if o.fee_coin else {},
        "timeInForce": o.tif, "orderType": o.order_type, "stopOrderType": "",
        "orderIv": "", "triggerPrice": "0", "takeProfit": "0", "stopLoss": "0",
        "tpTriggerBy": "", "slTriggerBy": "", "triggerDirection": 0, "triggerBy": "",
        "lastPriceOnCreated": "", "reduceOnly": o.reduce_only, "closeOnTrigger": False,
        "smpType": "None", "smpGroup": 0, "smpOrderId": "", "tpLimitPrice": "0",
        "slLimitPrice": "0", "placeType": "", "marketUnit": o.market_unit,
        "createdTime": str(o.created), "updatedTime": str(o.updated),
    }


def execution_row(e: Execution) -> dict:
    o = e.order
    return {
        "symbol": o.symbol, "orderId": o.order_id, "orderLinkId": o.link_id,
        "side": o.side, "orderType": o.order_type, "orderPrice": text(o.price),
        "orderQty": text(o.qty), "leavesQty": text(e.leaves_after), "execId": e.exec_id,
        "execPrice": text(e.price), "execQty": text(e.qty), "execValue": text(e.qty * e.price),
        "execFee": text(e.fee), "feeCurrency": e.fee_coin, "feeCoin": e.fee_coin,
        "feeRate": text(e.fee_rate),
        "execType": "Trade", "isMaker": e.is_maker, "execTime": str(e.time),
        "seq": e.seq, "stopOrderType": "", "blockTradeId": "", "markPrice": "",
        "indexPrice": "", "underlyingPrice": "", "markIv": "", "tradeIv": "",
        "closedSize": "", "marketUnit": o.market_unit, "extraFees": "",
    }
