"""The Bitget emulator as ccxt's real bitget class sees it: markets, prices, balances,
orders, fills and fees, signing, refusals and faults, each mapped to the ccxt exception an
adapter catches."""

from __future__ import annotations

from decimal import Decimal

import ccxt
import pytest

BTC = "BTC/USDT"


def test_load_markets_gives_spot_btc_usdt_with_the_venue_rules(bitget_client, bitget_venue):
    market = bitget_client.market(BTC)
    assert market["spot"] and market["id"] == "BTCUSDT" and market["active"]
    assert market["precision"] == {"amount": 0.000001, "price": 0.01}
    assert market["limits"]["amount"]["min"] == 0.000048
    assert market["limits"]["cost"]["min"] == 1.0
    paths = [r.path for r in bitget_venue.requests()]
    assert paths == ["/api/v2/spot/public/coins", "/api/v2/spot/public/symbols",
                     "/api/v2/margin/currencies"]


def test_signed_requests_carry_key_passphrase_and_a_base64_signature(bitget_client,
                                                                     bitget_venue):
    placed = bitget_client.create_order(BTC, "limit", "buy", 0.01, 29000,
                                        {"clientOrderId": "cf1e"})
    sent = bitget_venue.requests("/api/v2/spot/trade/place-order")[-1]
    assert sent.body == {"symbol": "BTCUSDT", "orderType": "limit", "force": "GTC",
                         "price": "29000", "size": "0.01", "side": "buy",
                         "clientOid": "cf1e"}
    assert sent.header("ACCESS-PASSPHRASE") == "venue-pass"
    assert sent.header("ACCESS-KEY") == "venue-key" and sent.header("ACCESS-SIGN")
    order = bitget_client.fetch_order(placed["id"], BTC)
    assert (order["status"], order["clientOrderId"], order["amount"]) == ("open", "cf1e",
                                                                          0.01)
    usdt = bitget_client.fetch_balance()["USDT"]
    assert (usdt["total"], usdt["used"], usdt["free"]) == (10000.0, 290.0, 9710.0)


@pytest.mark.parametrize("config, error", [
    ({"secret": "wrong"}, ccxt.AuthenticationError),
    ({"password": "wrong"}, ccxt.AuthenticationError),
    ({"apiKey": "other"}, ccxt.AuthenticationError),
])
def test_a_wrong_secret_passphrase_or_key_is_refused(bitget_venue, config, error):
    client = bitget_venue.ccxt(**config)
    client.load_markets()  # public
    with pytest.raises(error):
        client.fetch_balance()
    assert bitget_venue.requests("/api/v2/spot/account/assets")[-1].status == 400


def test_a_buy_pays_its_fee_in_base_a_sell_in_quote(bitget_client, bitget_venue):
    bitget_client.create_order(BTC, "limit", "buy", 0.01, 30001,
                               {"clientOrderId": "b1", "timeInForce": "IOC"})
    (trade,) = bitget_client.fetch_my_trades(BTC)
    assert (trade["price"], trade["amount"], trade["takerOrMaker"]) == (30000.1, 0.01, "taker")
    assert trade["fee"] == {"currency": "BTC", "cost": 0.00001}
    assert bitget_venue.balance("BTC").total == Decimal("0.00999")
    order = bitget_client.fetch_order(trade["order"], BTC)
    assert order["status"] == "closed" and order["fee"] == {"cost": 0.00001, "currency": "BTC"}
    bitget_client.create_order(BTC, "market", "sell", 0.005, None, {"clientOrderId": "s1"})
    sell = bitget_client.fetch_my_trades(BTC, None, None, {"orderId": bitget_venue.order(
        "s1").order_id})
    assert [t["fee"]["currency"] for t in sell] == ["USDT"]
    assert bitget_venue.balance("USDT").total == Decimal("9699.999") + Decimal(
        "150") - Decimal("0.15")


def test_partial_fills_cancel_and_history(bitget_client, bitget_venue):
    placed = bitget_client.create_order(BTC, "limit", "buy", 0.01, 29000,
                                        {"clientOrderId": "p1"})
    bitget_venue.fill("p1", "0.004")
    order = bitget_client.fetch_order(placed["id"], BTC)
    assert (order["status"], order["filled"]) == ("open", 0.004)
    assert [o["clientOrderId"] for o in bitget_client.fetch_open_orders(BTC)] == ["p1"]
    bitget_client.cancel_order(placed["id"], BTC)
    assert bitget_client.fetch_open_orders(BTC) == []
    (done,) = bitget_client.fetch_canceled_and_closed_orders(BTC)
    assert (done["status"], done["filled"]) == ("canceled", 0.004)
    with pytest.raises(ccxt.OrderNotFound):
        bitget_client.cancel_order(placed["id"], BTC)


def test_refusals_map_to_the_exceptions_an_adapter_catches(bitget_client, bitget_venue):
    with pytest.raises(ccxt.InsufficientFunds):
        bitget_client.create_order(BTC, "limit", "buy", 1, 29000, {"clientOrderId": "r1"})
    with pytest.raises(ccxt.InvalidOrder):
        bitget_client.create_order(BTC, "limit", "buy", 0.00001, 29000)
    bitget_client.create_order(BTC, "limit", "buy", 0.01, 29000, {"clientOrderId": "d1"})
    with pytest.raises(ccxt.ExchangeError, match="Duplicate clientOid"):
        bitget_client.create_order(BTC, "limit", "buy", 0.01, 29000, {"clientOrderId": "d1"})
    with pytest.raises(ccxt.BadRequest):
        bitget_client.create_order(BTC, "limit", "buy", 0.01, 29000,
                                   {"clientOrderId": "x" * 51})


def test_faults_lost_answer_places_the_order_and_rate_limit_is_a_network_error(
        bitget_venue):
    client = bitget_venue.ccxt(timeout=300)
    client.load_markets()
    bitget_venue.fault("/api/v2/spot/trade/place-order", "lose", delay=1)
    with pytest.raises(ccxt.RequestTimeout):
        client.create_order(BTC, "limit", "buy", 0.01, 29000, {"clientOrderId": "l1"})
    assert bitget_venue.order("l1") is not None  # placed, answer lost
    found = client.fetch_order(None, BTC, {"clientOid": "l1"})
    assert found["clientOrderId"] == "l1" and found["status"] == "open"
    bitget_venue.fault("/api/v2/spot/trade/place-order", "ratelimit")
    with pytest.raises(ccxt.NetworkError):
        client.create_order(BTC, "limit", "buy", 0.01, 29000, {"clientOrderId": "l2"})
    assert bitget_venue.order("l2") is None
