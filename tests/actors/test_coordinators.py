"""The parts a `System` builds are given what they need, never the System itself: no
part reaches back into the one that owns it."""

from __future__ import annotations

from capflow.actors.system import System


def test_the_trading_side_holds_no_reference_to_the_system(make_system, sqlite_url):
    cf = make_system(sqlite_url)
    for part in (cf.accounts, cf.trading, cf.allocation):
        held = [name for name, value in vars(part).items() if isinstance(value, System)]
        assert held == [], type(part).__name__
    # and a deposit is routed by the System itself: the accounts claim the amount, the
    # ledger books it, the account keeps what was booked
    cf.create_profile("p", "100")
    assert cf.deposit("p", "50", "d-1").ledger.allocated == 150
    cf.trading.settle()
    assert cf.accounts.status["paper"].allocated == 150
