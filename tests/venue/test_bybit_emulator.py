"""The Bybit emulator as ccxt's real bybit class sees it: markets, prices, balances, orders,
fills and fees, refusals and faults, each mapped to the ccxt exception an adapter catches."""

from __future__ import annotations

import time
from decimal import Decimal

import ccxt
import pytest

from capflow.bench.venues.bybit import BybitVenue

BTC = "BTC/USDT"
ACK = {"acknowledged": True}  # ccxt's fetch_order on a unified account asks for it


def test_load_markets_gives_spot_btc_usdt_with_the_venue_rules(bybit_client, bybit_venue):
    market = bybit_client.market(BTC)
    assert market["spot"] and market["id"] == "BTCUSDT" and market["active"]
    assert market["precision"] == {"amount": 0.000001, "price": 0.01}
    assert market["limits"]["amount"]["min"] == 0.000048
    assert market["limits"]["cost"]["min"] == 1.0
    paths = [r.path for r in bybit_venue.requests()]
    # spot only (the options of BybitVenue.ccxt); fetch_currencies asks coin info
    assert paths == ["/v5/asset/coin/query-info", "/v5/market/instruments-info"]
    assert bybit_venue.requests()[1].query == {"category": "spot"}


def test_ticker_follows_the_price_and_freezes_when_told(bybit_client, bybit_venue):
    assert bybit_client.fetch_ticker(BTC)["bid"] == 30000.0
    bybit_venue.set_price("BTCUSDT", "31000", "31000.5")
    assert bybit_client.fetch_ticker(BTC)["ask"] == 31000.5
    bybit_venue.freeze_tickers()
    bybit_venue.set_price("BTCUSDT", "32000", "32000.5")
    assert bybit_client.fetch_ticker(BTC)["ask"] == 31000.5  # stale
    # matching goes on at the new price: a market buy pays 32000.5
    bybit_client.create_order(BTC, "market", "buy", 0.001, None, {"clientOrderId": "m1"})
    assert bybit_venue.order("m1").cum_value == Decimal("32.0005")
    bybit_venue.thaw_tickers()
    assert bybit_client.fetch_ticker(BTC)["ask"] == 32000.5


def test_limit_order_with_a_client_id_rests_locks_quote_and_is_found(bybit_client,
                                                                      bybit_venue):
    placed = bybit_client.create_order(BTC, "limit", "buy", 0.01, 29000,
                                       {"clientOrderId": "cf-1-entry"})
    assert placed["clientOrderId"] == "cf-1-entry"
    sent = bybit_venue.requests("/v5/order/create")[-1]
    assert sent.method == "POST" and sent.body["orderLinkId"] == "cf-1-entry"
    assert sent.body["category"] == "spot" and sent.body["price"] == "29000"
    for name in ("X-BAPI-API-KEY", "X-BAPI-SIGN", "X-BAPI-TIMESTAMP", "X-BAPI-RECV-WINDOW"):
        assert sent.header(name)
    assert sent.header("x-bapi-api-key") == bybit_venue.api_key

    order = bybit_client.fetch_order(placed["id"], BTC, ACK)
    assert (order["status"], order["amount"], order["price"]) == ("open", 0.01, 29000.0)
    assert order["clientOrderId"] == "cf-1-entry" and order["remaining"] == 0.01
    assert [o["id"] for o in bybit_client.fetch_open_orders(BTC)] == [placed["id"]]
    usdt = bybit_client.fetch_balance()["USDT"]
    assert (usdt["total"], usdt["used"], usdt["free"]) == (10000.0, 290.0, 9710.0)


def test_market_buy_fills_at_the_ask_and_pays_its_fee_in_base(bybit_client, bybit_venue):
    bybit_client.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "mb"})
    sent = bybit_venue.requests("/v5/order/create")[-1].body
    assert (sent["marketUnit"], sent["qty"]) == ("baseCoin", "0.01")
    order = bybit_venue.order("mb")
    assert order.status == "Filled" and order.cum_value == Decimal("300.001")
    (trade,) = bybit_client.fetch_my_trades(BTC)
    assert (trade["price"], trade["amount"], trade["takerOrMaker"]) == (30000.1, 0.01, "taker")
    assert trade["fee"]["currency"] == "BTC" and trade["fee"]["cost"] == 0.00001
    balance = bybit_client.fetch_balance()
    assert balance["BTC"]["total"] == 0.00999  # 0.01 minus the 0.1 % fee
    assert bybit_venue.balance("USDT").total == Decimal("9699.999")


def test_market_sell_pays_its_fee_in_quote(bybit_client, bybit_venue):
    bybit_venue.set_balance("BTC", "0.5")
    bybit_client.create_order(BTC, "market", "sell", 0.1, None, {"clientOrderId": "ms"})
    (trade,) = bybit_client.fetch_my_trades(BTC)
    assert trade["side"] == "sell" and trade["price"] == 30000.0
    assert trade["fee"]["currency"] == "USDT" and trade["fee"]["cost"] == 3.0
    assert bybit_venue.balance("BTC").total == Decimal("0.4")
    assert bybit_venue.balance("USDT").total == Decimal("10000") + Decimal("2997")


def test_partial_fills_over_several_polls_each_with_a_unique_exec_id(bybit_client,
                                                                      bybit_venue):
    placed = bybit_client.create_order(BTC, "limit", "buy", 0.01, 29500,
                                       {"clientOrderId": "pf"})
    bybit_venue.fill("pf", "0.003")
    first = bybit_client.fetch_order(placed["id"], BTC, ACK)
    assert (first["status"], first["filled"], first["remaining"]) == ("open", 0.003, 0.007)
    bybit_venue.fill("pf", "0.004", "29400")
    bybit_venue.fill("pf", "0.003")
    done = bybit_client.fetch_order(placed["id"], BTC, ACK)
    assert (done["status"], done["filled"], done["remaining"]) == ("closed", 0.01, 0.0)
    trades = bybit_client.fetch_my_trades(BTC)
    assert len({t["id"] for t in trades}) == 3
    assert sorted(t["amount"] for t in trades) == [0.003, 0.003, 0.004]
    assert all(t["order"] == placed["id"] and t["takerOrMaker"] == "maker" for t in trades)
    assert bybit_client.fetch_open_orders(BTC) == []
    # the unspent lock (filled below the limit) is back: 29400 * 0.004 paid, not 29500
    assert bybit_venue.balance("USDT").locked == 0
    assert bybit_venue.balance("USDT").total == Decimal("10000") - Decimal("294.6")


def test_resting_limit_fills_as_maker_when_the_price_crosses(bybit_client, bybit_venue):
    bybit_client.create_order(BTC, "limit", "buy", 0.01, 29000, {"clientOrderId": "rest"})
    bybit_venue.set_price("BTCUSDT", "28990", "28999")
    order = bybit_venue.order("rest")
    assert order.status == "Filled" and order.cum_value == Decimal("290")
    assert bybit_venue.executions()[-1].is_maker


def test_ioc_takes_what_the_ask_shows_and_cancels_the_rest(bybit_client, bybit_venue):
    bybit_venue.set_price("BTCUSDT", "30000", "30000.1", ask_size="0.004")
    placed = bybit_client.create_order(BTC, "limit", "buy", 0.01, 30001,
                                       {"clientOrderId": "ioc", "timeInForce": "IOC"})
    order = bybit_client.fetch_order(placed["id"], BTC, ACK)
    assert order["info"]["orderStatus"] == "PartiallyFilledCanceled"
    assert (order["status"], order["filled"]) == ("closed", 0.004)
    assert bybit_venue.balance("USDT").locked == 0


def test_post_only_that_would_take_is_cancelled(bybit_client, bybit_venue):
    placed = bybit_client.create_order(BTC, "limit", "buy", 0.01, 30001,
                                       {"clientOrderId": "po", "postOnly": True})
    assert bybit_venue.requests("/v5/order/create")[-1].body["timeInForce"] == "PostOnly"
    order = bybit_client.fetch_order(placed["id"], BTC, ACK)
    assert order["status"] == "canceled" and order["filled"] == 0
    assert order["info"]["rejectReason"] == "EC_PostOnlyWillTakeLiquidity"


def test_cancel_order_and_cancel_of_an_unknown_order(bybit_client, bybit_venue):
    placed = bybit_client.create_order(BTC, "limit", "buy", 0.01, 29000,
                                       {"clientOrderId": "cx"})
    bybit_client.cancel_order(placed["id"], BTC)
    assert bybit_venue.order("cx").status == "Cancelled"
    assert bybit_client.fetch_order(placed["id"], BTC, ACK)["status"] == "canceled"
    assert bybit_client.fetch_open_orders(BTC) == []
    assert bybit_venue.balance("USDT").locked == 0
    with pytest.raises(ccxt.OrderNotFound):
        bybit_client.cancel_order(placed["id"], BTC)  # ended: 170213
    with pytest.raises(ccxt.OrderNotFound):
        bybit_client.cancel_order("1", BTC)


def test_an_order_can_fill_after_its_cancel_was_acknowledged(bybit_client, bybit_venue):
    placed = bybit_client.create_order(BTC, "limit", "buy", 0.01, 29000,
                                       {"clientOrderId": "late"})
    bybit_venue.defer_cancels = True
    bybit_client.cancel_order(placed["id"], BTC)  # retCode 0
    bybit_venue.fill("late", "0.004")
    bybit_venue.finish_cancels()
    order = bybit_client.fetch_order(placed["id"], BTC, ACK)
    assert order["info"]["orderStatus"] == "PartiallyFilledCanceled"
    assert order["filled"] == 0.004
    assert len(bybit_client.fetch_my_trades(BTC)) == 1


def test_closed_orders_come_from_the_order_history(bybit_client, bybit_venue):
    bybit_client.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "h1"})
    closed = bybit_client.fetch_closed_orders(BTC)
    assert [o["clientOrderId"] for o in closed] == ["h1"]
    assert bybit_venue.requests("/v5/order/history")


def test_a_duplicate_client_order_id_is_refused_as_invalid_order(bybit_client, bybit_venue):
    bybit_client.create_order(BTC, "limit", "buy", 0.01, 29000, {"clientOrderId": "dup"})
    with pytest.raises(ccxt.InvalidOrder, match="170141"):
        bybit_client.create_order(BTC, "limit", "buy", 0.01, 29000, {"clientOrderId": "dup"})
    assert len(bybit_venue.orders()) == 1
    assert bybit_venue.requests("/v5/order/create")[-1].ret_code == 170141


def test_a_client_order_id_longer_than_36_characters_is_refused(bybit_client, bybit_venue):
    with pytest.raises(ccxt.BadRequest, match="10001"):
        bybit_client.create_order(BTC, "limit", "buy", 0.01, 29000,
                                  {"clientOrderId": "x" * 37})
    assert bybit_venue.orders() == []


def test_insufficient_balance_is_insufficient_funds(bybit_client, bybit_venue):
    with pytest.raises(ccxt.InsufficientFunds, match="170131"):
        bybit_client.create_order(BTC, "limit", "buy", 1, 29000, {"clientOrderId": "big"})
    with pytest.raises(ccxt.InsufficientFunds):
        bybit_client.create_order(BTC, "market", "sell", 0.01, None, {"clientOrderId": "s"})
    assert bybit_venue.orders() == []


def test_a_bad_secret_or_key_is_an_authentication_error(bybit_venue):
    wrong_secret = bybit_venue.ccxt(secret="not-the-secret")
    with pytest.raises(ccxt.AuthenticationError, match="10004"):
        wrong_secret.fetch_balance()
    wrong_key = bybit_venue.ccxt(apiKey="someone-else")
    with pytest.raises(ccxt.AuthenticationError, match="10003"):
        wrong_key.fetch_balance()
    assert bybit_venue.orders() == []


def test_a_timestamp_outside_the_receive_window_is_refused(bybit_client, bybit_venue):
    bybit_venue.time_offset_ms = 60_000  # the client's clock is a minute behind
    with pytest.raises(ccxt.InvalidNonce, match="10002"):
        bybit_client.fetch_balance()


def test_rate_limits_http_429_and_ret_code_10006(bybit_client, bybit_venue):
    bybit_venue.fault("/v5/order/create", "ratelimit", status=429)
    with pytest.raises(ccxt.RateLimitExceeded):
        bybit_client.create_order(BTC, "limit", "buy", 0.01, 29000, {"clientOrderId": "r1"})
    bybit_venue.fault("*", "ratelimit")
    with pytest.raises(ccxt.RateLimitExceeded, match="10006"):
        bybit_client.fetch_balance()
    # in ccxt 4.5 both are NetworkError (OperationFailed), siblings of DDoSProtection
    assert issubclass(ccxt.RateLimitExceeded, ccxt.NetworkError)
    assert bybit_venue.orders() == []
    bybit_client.create_order(BTC, "limit", "buy", 0.01, 29000, {"clientOrderId": "r1"})
    assert bybit_venue.order("r1") is not None  # faults were for one request each


def test_a_5xx_is_exchange_not_available_and_places_nothing(bybit_client, bybit_venue):
    bybit_venue.fault("/v5/order/create", "http", status=502)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        bybit_client.create_order(BTC, "limit", "buy", 0.01, 29000, {"clientOrderId": "g"})
    assert bybit_venue.orders() == []
    assert bybit_venue.requests("/v5/order/create")[-1].status == 502


def test_a_lost_answer_times_out_with_the_order_placed(bybit_venue):
    client = bybit_venue.ccxt(timeout=300)
    client.load_markets()
    bybit_venue.fault("/v5/order/create", "lose", delay=2)
    started = time.monotonic()
    with pytest.raises(ccxt.RequestTimeout):
        client.create_order(BTC, "limit", "buy", 0.01, 29000, {"clientOrderId": "lost"})
    assert time.monotonic() - started < 1.5
    assert bybit_venue.requests("/v5/order/create")[-1].status is None  # never answered
    # the order is at the venue, and the client finds it by its id
    found = client.fetch_open_orders(BTC, None, None, {"orderLinkId": "lost"})
    assert [o["clientOrderId"] for o in found] == ["lost"]
    with pytest.raises(ccxt.InvalidOrder):  # resending the same id: duplicate
        client.create_order(BTC, "limit", "buy", 0.01, 29000, {"clientOrderId": "lost"})
    assert len(bybit_venue.orders()) == 1


def test_a_disconnect_mid_order_is_a_network_error_with_the_order_placed(bybit_client,
                                                                        bybit_venue):
    bybit_venue.fault("/v5/order/create", "lose", delay=0)
    with pytest.raises(ccxt.NetworkError) as caught:
        bybit_client.create_order(BTC, "limit", "buy", 0.01, 29000, {"clientOrderId": "cut"})
    assert not isinstance(caught.value, ccxt.ExchangeError)
    assert bybit_venue.order("cut").status == "New"


def test_a_connection_dropped_before_the_venue_acts_places_nothing(bybit_client,
                                                                  bybit_venue):
    bybit_venue.fault("/v5/order/create", "drop")
    with pytest.raises(ccxt.NetworkError):
        bybit_client.create_order(BTC, "limit", "buy", 0.01, 29000, {"clientOrderId": "d"})
    assert bybit_venue.orders() == []


def test_a_scripted_rejection_answers_the_given_code(bybit_client, bybit_venue):
    bybit_venue.fault("/v5/order/create", "reject", code=170210, msg="New order rejected.")
    with pytest.raises(ccxt.InvalidOrder, match="170210"):
        bybit_client.create_order(BTC, "limit", "buy", 0.01, 29000, {"clientOrderId": "rj"})
    assert bybit_venue.orders() == []


def test_reduce_only_is_sent_and_recorded(bybit_client, bybit_venue):
    bybit_venue.set_balance("BTC", "0.1")
    bybit_client.create_order(BTC, "limit", "sell", 0.01, 31000,
                              {"clientOrderId": "exit-1", "reduceOnly": True})
    assert bybit_venue.requests("/v5/order/create")[-1].body["reduceOnly"] is True
    assert bybit_venue.order("exit-1").reduce_only
    assert bybit_venue.balance("BTC").locked == Decimal("0.01")


def test_unknown_paths_answer_404_and_are_recorded():
    with BybitVenue() as venue:
        client = venue.ccxt()
        with pytest.raises(ccxt.ExchangeNotAvailable):
            client.fetch_order_book(BTC)  # loads markets, then asks a route not emulated
        assert venue.requests("/v5/market/orderbook")[-1].status == 404


def test_market_buy_with_a_price_is_sent_in_quote_coin_and_fills_whole_steps(bybit_client,
                                                                            bybit_venue):
    bybit_client.create_order(BTC, "market", "buy", 0.001, 30000, {"clientOrderId": "q"})
    sent = bybit_venue.requests("/v5/order/create")[-1].body
    assert "marketUnit" not in sent and sent["qty"] == "30"  # Bybit's default: quote coin
    order = bybit_venue.order("q")
    # 30 USDT at 30000.1 buys 0.000999 BTC (whole 0.000001 steps); the rest cannot buy one
    assert order.status == "Filled" and order.cum_qty == Decimal("0.000999")
    assert bybit_venue.balance("USDT").total == Decimal("10000") - Decimal("29.9700999")
    (trade,) = bybit_client.fetch_my_trades(BTC)
    assert trade["amount"] == 0.000999 and trade["fee"]["currency"] == "BTC"


def test_fill_or_kill_fills_all_or_nothing(bybit_client, bybit_venue):
    bybit_venue.set_price("BTCUSDT", "30000", "30000.1", ask_size="0.005")
    kill = bybit_client.create_order(BTC, "limit", "buy", 0.01, 30001,
                                     {"clientOrderId": "fok1", "timeInForce": "FOK"})
    assert bybit_client.fetch_order(kill["id"], BTC, ACK)["status"] == "canceled"
    bybit_client.create_order(BTC, "limit", "buy", 0.005, 30001,
                              {"clientOrderId": "fok2", "timeInForce": "FOK"})
    assert bybit_venue.order("fok2").status == "Filled"
    assert bybit_venue.order("fok1").cum_qty == 0
