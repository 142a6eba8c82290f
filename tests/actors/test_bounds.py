"""State kept per name a client chooses stays bounded: what a refused entry or a quote of
any symbol leaves behind."""

from __future__ import annotations

from decimal import Decimal as D

from capflow.actors import liquidity
from capflow.actors.liquidity import load_provider
from capflow.actors.model.settings import LiquidityConfig


def test_slot_claims_for_symbols_that_never_traded_leave_nothing_behind(make_system,
                                                                        sqlite_url):
    cf = make_system(sqlite_url, risk={"accounts": {"paper": {
        "max_open_positions_per_symbol": 5}}})
    cf.create_profile("p", "10")
    for i in range(30):  # 100 * 100 is far beyond 10: each is refused, after its claim
        answer = cf.signal("p", f"NEW{i}USDT", "BUY", "100", qty="100")
        assert answer["risk_reason"] == "INSUFFICIENT_CAPITAL"
    cf.trading.settle()
    assert cf.accounts.status["paper"].slot_symbols == 0


def test_smoothing_keeps_state_for_a_bounded_number_of_symbols(monkeypatch):
    monkeypatch.setattr(liquidity, "MAX_STATES", 50)
    provider = load_provider(LiquidityConfig(score=D("40"), ema_alpha=D("0.5")))
    for i in range(500):
        assert provider.get(f"S{i}").score == D("40")
    assert len(provider._state) == 50
    assert "S499" in provider._state and "S0" not in provider._state
