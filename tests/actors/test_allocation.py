"""The allocation formula (`actors.allocation`), without actors: table tests of the
reserved cash share, the worked case of the issue, the caps and their order, and the
liquidity providers."""

from __future__ import annotations

import json
import os
from decimal import Decimal as D

import pytest

from capflow.actors.config import load_config
from capflow.actors.liquidity import FileLiquidity, PushLiquidity, Smoothed, load_provider
from capflow.actors.model.allocation import (
    CapitalPicture,
    Externals,
    Instrument,
    Instruments,
    LiquiditySignal,
    decide,
    reserved_cash_pct,
)
from capflow.actors.model.errors import InvalidArgument
from capflow.actors.model.settings import AllocationConfig, LiquidityConfig

DEFAULTS = AllocationConfig()


def liq(score, regime="NORMAL", vol="0", confidence="100") -> LiquiditySignal:
    return LiquiditySignal(score=D(score), risk_regime=regime, volatility=D(vol),
                           confidence=D(confidence))


def picture(allocated="5000.00", *, orders="0.00", held="0.00", positions="0.00",
            realized="0.00", fees="0.00", exposure=None) -> CapitalPicture:
    a, o, h, p, r, f = (D(x) for x in (allocated, orders, held, positions, realized, fees))
    return CapitalPicture(profile_id="p", currency="USDT", places=2, allocated=a,
                          realized_pnl=r, fees=f, held=h, reserved_for_orders=o,
                          reserved_for_positions=p, available=a + r - f - h - o - p,
                          state="ACTIVE", exposure=exposure or {})


def ext(cash="1000000.00", signal=None) -> Externals:
    return Externals(account_id="paper", account_cash=None if cash is None else D(cash),
                     liquidity=signal)


NO_LIMITS = AllocationConfig(max_ticker=D(1), max_sector=D(1), max_industry=D(1),
                             max_area=D(1))


@pytest.mark.parametrize(("signal", "cfg", "expected", "fallback"), [
    (liq("0"), DEFAULTS, "0.70", False),                      # 0.70 - 0
    (liq("50"), DEFAULTS, "0.45", False),                     # 0.70 - 0.5 * 0.50
    (liq("100"), DEFAULTS, "0.20", False),                    # 0.70 - 1.0 * 0.50
    (liq("50", "RISK_OFF"), DEFAULTS, "0.55", False),         # 0.45 + 0.10
    (liq("50", "OFF"), DEFAULTS, "0.55", False),
    (liq("50", "risk_off"), DEFAULTS, "0.55", False),         # regime names ignore case
    (liq("50", vol="50"), AllocationConfig(vol_scale=D(1000)), "0.50", False),  # +0.05
    (liq("50", vol="50"), DEFAULTS, "0.55", False),           # 50/100 = 0.5, capped 0.10
    (liq("50", vol="-5"), DEFAULTS, "0.45", False),           # clamp(.., 0, ..): no credit
    (liq("0", "RISK_OFF", vol="100"), DEFAULTS, "0.85", False),  # 0.90 clamped to 0.85
    (liq("100"), AllocationConfig(reserved_pct_min=D("0.25")), "0.25", False),  # clamp up
    (liq("100", confidence="68"), DEFAULTS, "0.60", True),    # not trusted: fallback
    (liq("100", confidence="69"), DEFAULTS, "0.20", False),   # the threshold itself: trusted
    (None, DEFAULTS, "0.60", True),                           # unknown: confidence 0
])
def test_reserved_cash_pct_table(signal, cfg, expected, fallback):
    pct, used_fallback = reserved_cash_pct(signal, cfg)
    assert pct == D(expected)
    assert used_fallback is fallback


def test_the_worked_case():
    # cash 5000, score 72, volatility 18.5, open orders 9.50, no reservations:
    # base = 0.70 - 0.72 * 0.50 = 0.34; + clamp(18.5 / 100, 0, 0.10) = 0.10 -> 0.44
    # reserved_cash = 5000 * 0.44 = 2200.00
    # max_investable = 5000 - 2200 - 0 - 9.50 = 2790.50
    pic = picture("5000.00", orders="9.50")
    d = decide(pic, "BTCUSDT", ext(signal=liq("72", vol="18.5", confidence="80")),
               Instruments(), NO_LIMITS)
    assert d.cash == D("5000.00")
    assert d.reserved_cash_pct == D("0.44")
    assert d.reserved_cash == D("2200.00")
    assert d.max_investable == D("2790.50")
    assert d.open_orders == D("9.50") and d.reservations == D("0.00")
    assert d.limited_by == [] and d.used_fallback is False
    assert str(d.max_investable) == "2790.50"  # floored to cents, two places
    assert any("2790.50" in line for line in d.reasoning)


def test_cash_leaves_out_what_positions_hold_and_counts_pnl_and_fees():
    # cash = 10000 + 250 - 50 - 4000 = 6200; fallback 0.60 -> reserved 3720
    # max = 6200 - 3720 - reservations 300 - orders 100 = 2080
    pic = picture("10000.00", positions="4000.00", realized="250.00", fees="50.00",
                  held="300.00", orders="100.00")
    d = decide(pic, "X", ext(), Instruments(), NO_LIMITS)
    assert (d.cash, d.reserved_cash, d.max_investable) == (
        D("6200.00"), D("3720.00"), D("2080.00"))
    assert d.used_fallback is True


def test_max_investable_is_floored_to_cents_and_never_negative():
    # cash 1000.01 * 0.45 = 450.0045 -> max = 550.0055 -> 550.00 (floored; rounding
    # would give 550.01)
    d = decide(picture("1000.01"), "X", ext(signal=liq("50")), Instruments(), NO_LIMITS)
    assert d.max_investable == D("550.00")
    assert d.reserved_cash == D("450.01")  # shown rounded up: what is kept back
    # reservations beyond the unreserved cash: 0, not negative
    d = decide(picture("1000.00", held="900.00"), "X", ext(), Instruments(), NO_LIMITS)
    assert d.max_investable == D("0.00")
    assert d.too_small


META = Instruments({
    "AAPL": Instrument("AAPL", "Technology", "Consumer Electronics", "US"),
    "MSFT": Instrument("MSFT", "Technology", "Software", "US"),
    "DELL": Instrument("DELL", "Technology", "Consumer Electronics", "US"),
    "SAP": Instrument("SAP", "Technology", "Software", "EU"),
})


def test_the_industry_limit_binds_and_is_named():
    # equity 100,000; score 100 -> pct 0.20 -> 80,000 before the caps
    # ticker AAPL: limit 10,000, invested 0 -> residual 10,000: binds (80,000 -> 10,000)
    #   (so choose a ticker limit that does not bind: 0.20 -> 20,000, residual 20,000,
    #    which still binds the 80,000; the industry must bind after it)
    # DELL is in the same industry with 25,000 invested:
    #   sector Technology: limit 40,000, invested 25,000 + MSFT 5,000 = 30,000 -> 10,000
    #   industry Consumer Electronics: limit 30,000, invested 25,000 -> residual 5,000
    #   area US: limit 50,000, invested 30,000 -> 20,000 (not binding)
    cfg = AllocationConfig(max_ticker=D("0.20"))
    pic = picture("100000.00", exposure={"DELL": D("25000"), "MSFT": D("5000")})
    d = decide(pic, "AAPL", ext(signal=liq("100")), META, cfg)
    assert d.max_investable == D("5000.00")
    assert d.limited_by == ["MAX_TICKER", "MAX_SECTOR", "MAX_INDUSTRY"]
    assert d.limited_by[-1] == "MAX_INDUSTRY"
    assert d.concentration["industry"] == {
        "key": "Consumer Electronics", "limit": D("30000.00"), "invested": D("25000.00"),
        "residual": D("5000.00")}
    assert d.concentration["area"]["residual"] == D("20000.00")
    # one reasoning line per step: cash, pct, max, account, 4 dimensions, ledger
    assert len(d.reasoning) >= 9
    assert any("MAX_INDUSTRY" in line for line in d.reasoning)


def test_only_the_industry_binds_when_the_others_have_room():
    # the formula gives 100000 * (1 - 0.85) = 15,000 (regime off, high volatility)
    # ticker 0.20 -> 20,000; sector 0.40 -> 40,000 - 25,000 = 15,000: equal, not binding
    # industry 0.30 -> 30,000 - 25,000 = 5,000: binds
    cfg = AllocationConfig(max_ticker=D("0.20"))
    pic = picture("100000.00", exposure={"DELL": D("25000")})
    d = decide(pic, "AAPL", ext(signal=liq("0", "RISK_OFF", vol="100")), META, cfg)
    assert d.reserved_cash_pct == D("0.85")
    assert d.limited_by == ["MAX_INDUSTRY"]
    assert d.max_investable == D("5000.00")


def test_the_caps_apply_in_order_account_then_concentration_then_ledger():
    # account cash 700 binds first; the ticker residual 500 (10 % of 5000) then binds too
    d = decide(picture("5000.00"), "X", ext(cash="700.00", signal=liq("100")),
               Instruments(), DEFAULTS)
    assert d.limited_by == ["ACCOUNT_CASH", "MAX_TICKER"]
    assert d.max_investable == D("500.00")
    # unknown account cash counts as 0: nothing to invest
    d = decide(picture("5000.00"), "X", ext(cash=None, signal=liq("100")), Instruments(),
               DEFAULTS)
    assert d.max_investable == D("0.00") and d.limited_by == ["ACCOUNT_CASH"]
    assert d.too_small
    # the ledger's available binds last (held counted both in the formula and here)
    pic = picture("5000.00")
    pic = CapitalPicture(**{**{f: getattr(pic, f) for f in pic.__struct_fields__},
                            "available": D("123.45")})
    d = decide(pic, "X", ext(signal=liq("100")), Instruments(), NO_LIMITS)
    assert d.limited_by == ["LEDGER"] and d.max_investable == D("123.45")


def test_wire_map_has_the_contract_fields():
    d = decide(picture(), "BTCUSDT", ext(signal=liq("72", vol="18.5")), Instruments(),
               DEFAULTS).to_map()
    for key in ("max_investable", "reserved_cash_pct", "reserved_cash", "constraints",
                "concentration", "limited_by", "used_fallback", "reasoning"):
        assert key in d
    assert set(d["constraints"]) >= {"cash", "open_orders", "reservations"}
    assert all(isinstance(line, str) for line in d["reasoning"])


def test_instruments_from_csv_and_config(tmp_path):
    path = tmp_path / "instruments.csv"
    path.write_text("symbol,sector,industry,area\nAAPL,Technology,Hardware,US\n"
                    "BTCUSDT,Crypto,,Global\n")
    cfg = load_config(env={}, allocation={"instruments_csv": str(path),
                                          "instruments": {"AAPL": {"sector": "Tech2"}}})
    inst = Instruments.load(cfg.allocation)
    assert inst.get("AAPL") == Instrument("AAPL", "Tech2", None, None)  # config wins
    assert inst.get("BTCUSDT") == Instrument("BTCUSDT", "Crypto", None, "Global")
    assert inst.get("ZZZ") == Instrument("ZZZ")


# -- liquidity providers ---------------------------------------------------------------


def test_static_provider_unknown_without_a_score():
    assert load_provider(LiquidityConfig()).get("X") is None
    sig = load_provider(LiquidityConfig(score=D("40"), risk_regime="risk_off")).get("X")
    assert (sig.score, sig.risk_regime, sig.confidence) == (D("40"), "RISK_OFF", D("100"))


def test_file_provider_rereads_the_file_when_it_changes(tmp_path):
    path = tmp_path / "liq.json"
    path.write_text(json.dumps({"score": 72, "volatility": 18.5, "confidence": 80,
                                "symbols": {"BTCUSDT": {"score": 40}}}))
    p = FileLiquidity(LiquidityConfig(provider="file", file=str(path)))
    assert p.get("ETHUSDT").score == D("72")
    btc = p.get("BTCUSDT")
    assert (btc.score, btc.volatility, btc.confidence) == (D("40"), D("18.5"), D("80"))
    path.write_text(json.dumps({"score": 10, "confidence": 90}))
    os.utime(path, ns=(10**18, 10**18))  # a new modification time, whatever the FS grain
    assert p.get("BTCUSDT").score == D("10")
    path.write_text("{not json")
    os.utime(path, ns=(2 * 10**18, 2 * 10**18))
    assert p.get("BTCUSDT").score == D("10")  # a broken file keeps the last good reading


def test_push_provider_per_symbol_then_all():
    p = PushLiquidity(LiquidityConfig(provider="push"))
    assert p.get("X") is None
    p.set("*", {"score": "50"})
    p.set("BTCUSDT", {"score": "90", "confidence": "70"})
    assert p.get("X").score == D("50") and p.get("BTCUSDT").score == D("90")
    with pytest.raises(InvalidArgument) as err:
        p.set("X", {"score": "101"})
    assert err.value.field == "score"
    with pytest.raises(InvalidArgument):
        p.set("X", {"score": "50", "confidence": "-1"})


def test_smoothing_ema_and_regime_hysteresis():
    cfg = LiquidityConfig(provider="push", ema_alpha=D("0.5"), regime_hysteresis=2)
    p = load_provider(cfg)
    assert isinstance(p, Smoothed)
    inner = p.inner
    inner.set("*", {"score": "80"})
    assert p.get("X").score == D("80")  # the first reading is taken as it is
    assert p.get("X").score == D("80")  # no new reading: no new step
    inner.set("*", {"score": "40", "risk_regime": "RISK_OFF"})
    s = p.get("X")
    assert s.score == D("60")  # 0.5 * 40 + 0.5 * 80
    assert s.risk_regime == "NORMAL"  # seen once: not yet
    inner.set("*", {"score": "40", "risk_regime": "RISK_OFF"})
    s = p.get("X")
    assert s.score == D("50") and s.risk_regime == "RISK_OFF"  # twice in a row: taken


def test_a_profile_that_may_not_add_exposure_gets_nothing():
    pic = picture("5000.00")
    for state in ("HALTED", "REDUCE_ONLY"):
        halted = CapitalPicture(**{**{f: getattr(pic, f) for f in pic.__struct_fields__},
                                   "state": state})
        d = decide(halted, "X", ext(signal=liq("100")), Instruments(), NO_LIMITS)
        assert d.max_investable == D("0.00") and d.limited_by == ["TRADING_STATE"]
        assert d.too_small


@pytest.mark.parametrize("bad", [{"vol_scale": "0"}, {"max_ticker": "1.5"},
                                 {"reserved_pct_min": "0.9"}, {"account_timeout_s": 0},
                                 {"min_order_notional": "-1"}])
def test_nonsense_constants_are_refused_at_start(bad):
    from capflow.actors.model.settings import ConfigError

    with pytest.raises(ConfigError):
        load_config(env={}, allocation=bad)
