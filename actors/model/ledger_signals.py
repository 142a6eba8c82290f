"""A profile's ledger taking signals: sizing a signal, checking it (also as `risk.check`
asks, changing nothing) and opening its order (a mixin of `Ledger`, beside
`ledger_trading`, whose `open_order` it calls)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from capflow.actors.model.errors import Conflict, Denial
from capflow.actors.model.messages import Event, SignalRecord, SignalRecorded
from capflow.actors.model.orders import (
    OrderSpec,
    Signal,
    SignalPolicy,
    entry_reference,
    max_fill_price,
    order_reservation,
    protective_crossed,
    protective_prices,
    size_signal,
)
from capflow.actors.model.outcome import Outcome
from capflow.actors.model.risk import Check, Proposal
from capflow.actors.model.sizing import Shrink, shrink
from capflow.actors.model.trailing import order_trail
from capflow.actors.model.venue import apply_rule, price_to_tick


class LedgerSignals:
    """`Ledger`'s signals: a signal becomes one entry order, or a recorded refusal."""

    def submit_signal(self, signal: Signal, policy: SignalPolicy, now: datetime,
                      cause: str = "") -> Outcome:
        """Size a signal, check it, and open its order. A signal is always answered: a
        failed check is a `SignalRecord` with ``risk_ok = False`` and the reason, not an
        error. A repeated `signal_id` answers what the first one got."""
        sid = signal.signal_id
        if sid is not None:
            prior = self.signals.get(sid)
            if prior is not None:
                if prior.fingerprint != signal.fingerprint():
                    raise Conflict(f"signal_id {sid!r} was used for a different signal",
                                   {"signal_id": sid})
                return Outcome(prior, [], reused=True)
        tp, sl, qty = self._size(signal, policy)
        reason: str | None = None
        events: list[Event] = []
        detail: dict[str, Any] = {}
        if policy.blocked is None:
            qty, shrunk = self._shrink(signal, policy, qty, sl, now)
            if shrunk is not None:
                detail["sizing"] = shrunk.to_map()
        if policy.blocked is not None:
            reason = policy.blocked
        elif qty <= 0 and policy.venue is None:
            reason = "MIN_NOTIONAL"
        elif policy.venue is not None and isinstance(
                venue := apply_rule(signal.side, qty, None, self._reference(signal, policy),
                                    policy.venue), Denial):
            reason = venue.details["reason"]
        else:
            amount, cap = self._entry_capital(signal, policy, qty)
            spec = OrderSpec(order_id=policy.order_id, position_id=policy.position_id,
                             symbol=signal.symbol, side=signal.side, qty=qty,
                             price=signal.price, tp_price=tp, sl_price=sl,
                             client_order_id=None if sid is None else f"signal:{sid}",
                             account_id=policy.account_id, signal_id=sid,
                             strategy=signal.strategy, exchange=signal.exchange,
                             max_price=cap, time_in_force=signal.time_in_force,
                             expire_at=signal.expire_at,
                             **order_trail(signal.trail))
            crossed = protective_crossed(signal.side, tp, sl, policy.bid, policy.ask)
            opened = self.open_order(spec, amount, now, cause or sid or policy.order_id,
                                     last=None if crossed is None else Denial(
                                         "RISK_REJECTED", f"the market has already crossed "
                                         f"the {crossed}",
                                         {"reason": "TP_SL_CROSSED"}))
            if isinstance(opened, Denial):
                reason = opened.details.get("reason") or opened.code
                if "until" in opened.details:
                    detail["risk_details"] = opened.details
            else:
                events = opened.events
        ok = reason is None
        record = SignalRecord(sid or "", signal.fingerprint(), ok, reason,
                              policy.order_id if ok else None,
                              policy.position_id if ok else None, signal.symbol, signal.side,
                              qty if ok else None, tp if ok else None, sl if ok else None, now)
        if sid is not None:
            self.signals[sid] = record
            events.append(self._event(SignalRecorded, now, cause or sid, signal=record))
        return Outcome(record, events, detail=detail or None)

    def _entry_capital(self, signal: Signal, policy: SignalPolicy,
                       qty: Decimal) -> tuple[Decimal, Decimal]:
        """(amount, max_price) of a signal's market entry: reserved at the worse of the
        signal's price and the market's, plus the slippage buffer and the taker fee; the
        broker may not fill it above `max_price`, so it never costs more than that."""
        ref = self._reference(signal, policy)
        amount = order_reservation(qty, ref, policy.reserve_buffer_pct, policy.taker_fee,
                                   self.places)
        cap = max_fill_price(qty, ref, policy.reserve_buffer_pct, policy.taker_fee, amount,
                             policy.price_places, self.places)
        if policy.venue is not None:  # the limit the venue is sent: on its tick, never up
            cap = price_to_tick("BUY", cap, policy.venue)
        return amount, cap

    @staticmethod
    def _reference(signal: Signal, policy: SignalPolicy) -> Decimal:
        return entry_reference(signal.side, signal.price, policy.bid, policy.ask)

    def _size(self, signal: Signal, policy: SignalPolicy) -> tuple[Decimal, Decimal, Decimal]:
        """(tp_price, sl_price, qty) of a signal."""
        tp_pct = policy.tp_pct if signal.tp_pct is None else signal.tp_pct
        sl_pct = policy.sl_pct if signal.sl_pct is None else signal.sl_pct
        tp, sl = protective_prices(signal.side, signal.price, tp_pct, sl_pct,
                                   policy.price_places)
        equity = self.allocated + self.realized_pnl - self.fees
        return tp, sl, size_signal(signal, policy, equity, sl)

    def _shrink(self, signal: Signal, policy: SignalPolicy, qty: Decimal, sl: Decimal,
                now: datetime) -> tuple[Decimal, Shrink | None]:
        """The entry's quantity under its sizing policy (actors/model/sizing.py)."""
        def failing(q: Decimal) -> list[Check]:
            amount = self._entry_capital(signal, policy, q)[0]
            prop = Proposal(signal.symbol, signal.side, q, signal.price, sl,
                            self.risk.mark(signal.symbol))
            return [c for c in self.what_if(prop, amount, now) if not c.ok]

        return shrink(qty, signal, policy, self.risk.limits, failing,
                      self._reference(signal, policy))

    def what_if_signal(self, signal: Signal, policy: SignalPolicy,
                       now: datetime) -> dict[str, Any]:
        """`risk.check`: size `signal` as `submit_signal` would and run every check on
        the order it would make. Changes nothing."""
        tp, sl, qty = self._size(signal, policy)
        qty, shrunk = self._shrink(signal, policy, qty, sl, now)
        amount = (self._entry_capital(signal, policy, qty)[0] if qty > 0 else
                  order_reservation(qty, signal.price, policy.reserve_buffer_pct,
                                    policy.taker_fee, self.places))
        checks = self.what_if(Proposal(signal.symbol, signal.side, qty, signal.price, sl,
                                       self.risk.mark(signal.symbol)), amount, now)
        exit_price = policy.bid if signal.side == "BUY" else policy.ask
        if exit_price is not None:  # with a market: its TP / SL must not be crossed yet
            crossed = protective_crossed(signal.side, tp, sl, policy.bid, policy.ask)
            checks.append(Check("protection", "TP_SL_CROSSED", crossed is None, exit_price,
                                {"tp_price": tp, "sl_price": sl}))
        if policy.venue is not None:
            venue = apply_rule(signal.side, qty, None, self._reference(signal, policy),
                               policy.venue)
            if isinstance(venue, Denial):
                checks.insert(0, Check("venue", venue.details["reason"], False,
                                       venue.details["limit"], venue.details["value"]))
        elif qty <= 0:
            checks.insert(0, Check("quantity", "MIN_NOTIONAL", False, "> 0", qty))
        out = {"symbol": signal.symbol, "side": signal.side, "qty": qty,
               "price": signal.price, "notional": qty * signal.price, "amount": amount,
               "tp_price": tp, "sl_price": sl, "checks": checks}
        if shrunk is not None:
            out["sizing"] = shrunk.to_map()
        return out
