"""`EntryFlow`: how entries come into `Trading` -- signals (audited, sized, checked,
reserved and recorded in one step of the profile's ledger), orders (`order.submit`),
the what-if (`risk.check`), the claims of account-wide slots and of new symbols' markets
they make first, and the prices, places and fees they are reserved at.

A mixin of `actors.trading.Trading`: it uses the trading side's `accounts`, board,
`to_ledger` and `knows_profile`, and `Trading` is the only class that inherits it.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
from loguru import logger

from capflow.actors.audit_log import SignalAuditLog
from capflow.actors.model import messages as m
from capflow.actors.model.amend import Pricing, reservation_for
from capflow.actors.model.errors import Denial, Denied, InvalidArgument, NotFound, Unavailable
from capflow.actors.model.ids import new_id
from capflow.actors.model.money import parse_decimal
from capflow.actors.model.order_types import (
    VENUE_UNSUPPORTED_ORDER,
    check_order_fields,
    parse_expire_at,
    parse_order_type,
    parse_time_in_force,
    venue_refusal,
)
from capflow.actors.model.orders import (
    SIGNAL_KEY_PREFIX,
    OrderSpec,
    SignalAnswer,
    SignalPolicy,
    check_protection,
    parse_side,
    parse_signal,
    parse_symbol,
    protective_crossed,
)
from capflow.actors.model.prices import STALE_PRICES
from capflow.actors.model.risk import Check
from capflow.actors.model.scale_in import check_target
from capflow.actors.model.symbols import CLAIMED, REFUSED
from capflow.actors.model.ticks import new_price_places
from capflow.actors.model.trailing import check_trail_places, order_trail, parse_trail
from capflow.actors.model.venue import apply_rule, price_to_tick
from capflow.actors.reply import Reply, relay
from capflow.actors.trading_stops import unsupported_trail

DEFAULT_TAKER_FEE = Decimal("0.0004")
DEFAULT_MAKER_FEE = Decimal("0.0002")


class EntryFlow:
    def _on_recorded(self, events) -> None:
        """A bus listener: an order recorded for a symbol with no market starts one, at
        the order's price (a refused entry never does)."""
        for e in events:
            if not isinstance(e, m.OrderCapitalReserved) or e.order.account_id is None:
                continue
            o = e.order
            if self.symbols.known(o.symbol) or o.symbol in self.venue_owned or (
                    o.account_id in self.accounts.venue_priced):
                continue  # priced by its venue: not simulated
            price = o.price or o.max_price
            if price is not None and self.symbols.add(o.symbol) and self.sim is not None:
                self.sim.ensure_symbol(o.symbol, price)  # a Reply: never waited on

    def _claim_symbol(self, symbol: str, reply: Reply) -> tuple[Reply, Denial | None]:
        """Claim a market for an entry in `symbol`: (the reply to answer through, which
        releases a claimed slot first; the refusal when no new symbol may be added)."""
        claim = self.symbols.claim(symbol)
        if claim == REFUSED:
            return reply, Denial(
                "RISK_REJECTED", f"no market for {symbol!r}: " + (
                    "new symbols are off ([simulator] new_symbols = false)"
                    if not self.symbols.allow_new else
                    f"the simulator already has its {self.symbols.max_symbols} symbols "
                    "([simulator] max_symbols)"),
                {"reason": "UNKNOWN_SYMBOL", "limit": self.symbols.max_symbols,
                 "value": self.symbols.count()})
        if claim != CLAIMED:
            return reply, None
        outer = reply

        def released(r: Reply) -> None:
            self.symbols.release(symbol)
            outer.finish_with(*r.result())

        return Reply(released), None

    def _places(self, symbol: str, price: Decimal) -> tuple[int, int]:
        spec = self.config.simulator.symbols.get(symbol)
        if spec is not None:
            return spec.price_places, spec.qty_places
        # a symbol first seen at `price` gets the places the simulator gives it
        return new_price_places(price), 6

    def price_places(self, account_id: str, symbol: str, price: Decimal) -> int:
        """The decimals a price of `symbol` may have (the venue's tick where it has one)."""
        places = self._places(symbol, price)[0]
        rules = self.accounts.venue_rules(account_id)
        rule = None if rules is None else rules.rule(symbol)
        if rule is not None and not isinstance(rule, Denial):
            places = max(places, _places_of(rule.price_tick))
        return places

    def _fees(self, account_id: str) -> tuple[Decimal, Decimal]:
        s = self.config.brokers.accounts[account_id].settings
        return (Decimal(str(s.get("taker_fee", DEFAULT_TAKER_FEE))),
                Decimal(str(s.get("maker_fee", DEFAULT_MAKER_FEE))))

    # -- signals ----------------------------------------------------------------------

    def _audit(self, record: dict[str, Any]) -> None:
        if self.audit is None:
            o = self.config.oms
            self.audit = SignalAuditLog(o.audit_log, o.audit_max_bytes, o.audit_backups)
        self.audit.write(record)

    def submit_signal(self, profile_id: str, raw: dict[str, Any],
                      callback: Callable[[Reply], None] | None = None) -> Reply:
        """Audit, then trade a signal. The reply resolves to its `SignalAnswer` (whose
        `to_map` is the `signal.submit` answer); only a malformed signal fails
        (`InvalidArgument`)."""
        reply = Reply(callback)
        try:
            self._audit({"received_at": self.clock.now(), "profile_id": profile_id,
                         "signal": raw})
            answer = self._signal_gate(profile_id)
            if answer is not None:
                parse_signal(raw, self.clock.now())
                reply.resolve(answer)
                return reply
            signal = parse_signal(raw, self.clock.now())
            policy = self._signal_policy(profile_id, signal)
        except Exception as exc:
            reply.fail(exc)
            return reply
        if policy.account_id in self.accounts.venue_priced:  # its venue lists the markets
            answer, refused = reply, None
        else:
            answer, refused = self._claim_symbol(signal.symbol, reply)
        if refused is not None and policy.blocked is None:
            policy = msgspec.structs.replace(policy, blocked="UNKNOWN_SYMBOL")
        self._route_signal(profile_id, signal, policy, answer)
        return reply

    def _route_signal(self, profile_id: str, signal, policy: SignalPolicy,
                      reply: Reply) -> None:
        if policy.blocked is None and policy.account_id in self.accounts.slot_limited:
            def claimed(claim_id: int | None, denial: Denial | None) -> None:
                p = policy if denial is None else msgspec.structs.replace(
                    policy, blocked=denial.details["reason"])
                self._send_signal(profile_id, signal, p, reply, claim_id)

            self._claim_slot(policy.account_id, profile_id, signal.symbol, claimed, reply)
        else:
            self._send_signal(profile_id, signal, policy, reply, None)

    def _signal_policy(self, profile_id: str, signal) -> SignalPolicy:
        account = self.accounts.account_for(profile_id)
        price_places, qty_places = self._places(signal.symbol, signal.price)
        tick = self.board.get(signal.symbol)
        gave_up = self.accounts.status[account].state == "GAVE_UP"
        blocked = "BROKER_DISCONNECTED" if gave_up else None
        if blocked is None and self.accounts.stale_prices(account) is not None:
            blocked = STALE_PRICES
        venue = None
        rules = self.accounts.venue_rules(account)
        if rules is not None and blocked is None and venue_refusal(
                "MARKET", signal.time_in_force) is not None:
            blocked = VENUE_UNSUPPORTED_ORDER
        if signal.trail is not None and blocked is None and not (
                self.accounts.supports_trailing(account)):
            blocked = VENUE_UNSUPPORTED_ORDER
        if rules is not None and blocked is None:
            rule = rules.rule(signal.symbol)
            if isinstance(rule, Denial):
                blocked = rule.details["reason"]
            else:
                venue = rule
                price_places = max(price_places, _places_of(rule.price_tick))
        check_trail_places(signal.trail, price_places)
        order_id = new_id("ord")
        return SignalPolicy(
            order_id=order_id, position_id=order_id.replace("ord_", "pos_", 1),
            account_id=account, tp_pct=self.config.oms.tp_pct,
            sl_pct=self.config.oms.sl_pct,
            risk_per_trade_pct=self.config.oms.risk_per_trade_pct,
            reserve_buffer_pct=self.config.oms.reserve_buffer_pct,
            taker_fee=self._fees(account)[0], price_places=price_places,
            qty_places=qty_places,
            blocked=blocked, venue=venue,
            bid=None if tick is None else tick.bid,
            ask=None if tick is None else tick.ask)

    def _send_signal(self, profile_id: str, signal, policy: SignalPolicy, reply: Reply,
                     claim_id: int | None) -> None:
        if signal.signal_id is None and policy.blocked is not None:
            reply.resolve(SignalAnswer(reason=policy.blocked))
            return
        answered = relay(reply, lambda out: SignalAnswer(record=out.result, reused=out.reused,
                                                         detail=out.detail))
        if claim_id is not None:
            answered = self._settling(policy.account_id, claim_id, answered)
        self.to_ledger(profile_id, m.SubmitSignal(
            signal=signal, policy=policy, cause=signal.signal_id or policy.order_id),
            answered)

    # -- account-wide open position limits ------------------------------------------

    def _claim_slot(self, account_id: str, profile_id: str, symbol: str,
                    then: Callable[[int | None, Denial | None], None], reply: Reply) -> None:
        """Claim an open position slot of the account, then `then(claim_id, None)`, or
        `then(None, denial)` when the account is full; `reply` fails on anything else."""

        def claimed(r: Reply) -> None:
            # runs on the account manager's thread: nothing may escape into it
            claim_id, error = r.result()
            try:
                if isinstance(error, Denied):
                    then(None, error.denial)
                elif error is not None:
                    reply.fail(error)
                else:
                    then(claim_id, None)
            except Exception as exc:
                logger.exception("entry after a slot claim failed")
                reply.fail(Unavailable(f"the entry could not be sent: {exc}"))

        self.accounts.claim_slot(account_id, profile_id, symbol, claimed)

    def _settling(self, account_id: str, claim_id: int,
                  callback: Callable[[Reply], None]) -> Callable[[Reply], None]:
        """Wrap a ledger reply callback: settle the slot claim first. A recorded order
        told the manager of itself (`Place`) before this runs, so the slot is held by
        the order when the claim ends."""

        def settle(r: Reply) -> None:
            try:
                self.accounts.settle_slot(account_id, claim_id)
            finally:
                callback(r)

        return settle

    def _signal_gate(self, profile_id: str) -> SignalAnswer | None:
        if not self.knows_profile(profile_id):
            raise NotFound("profile", profile_id)
        if not self.config.oms.enabled:
            return SignalAnswer(reason="OMS_DISABLED", oms=False)
        return None

    # -- what-if ---------------------------------------------------------------------

    def risk_check(self, profile_id: str, raw: dict[str, Any],
                   callback: Callable[[Reply], None] | None = None) -> Reply:
        """`risk.check`: every check a signal like `raw` would meet, the account-wide
        ones included; nothing is audited, reserved, counted or recorded."""
        reply = Reply(callback)
        try:
            self._known(profile_id)
            signal = parse_signal(raw, self.clock.now())
            policy = self._signal_policy(profile_id, signal)
        except Exception as exc:
            reply.fail(exc)
            return reply
        account = policy.account_id

        def answer(result: dict[str, Any], extra: list) -> None:
            # in the order a real entry meets them: the account's slots come first
            checks = extra + result["checks"]
            if account not in self.accounts.venue_priced and not self.symbols.admits(
                    signal.symbol):
                checks.insert(0, Check("market", "UNKNOWN_SYMBOL", False,
                                       self.symbols.max_symbols, self.symbols.count()))
            if policy.blocked is not None and policy.blocked.startswith("VENUE_"):
                checks.insert(0, Check("venue", policy.blocked, False, None, signal.symbol))
            elif policy.blocked == STALE_PRICES:
                watch = self.accounts.status[account].prices
                checks.insert(0, Check("prices", STALE_PRICES, False, watch.stale_after_s,
                                       round(watch.age_s() or 0.0, 3)))
            elif policy.blocked is not None:
                checks.insert(0, Check("broker", policy.blocked, False, "CONNECTED",
                                       self.accounts.status[account].state))
            if not self.config.oms.enabled:
                checks.insert(0, Check("oms", "OMS_DISABLED", False, True, False))
            failed = [c for c in checks if not c.ok]
            reply.resolve({**result, "profile_id": profile_id, "account_id": account,
                           "allowed": not failed,
                           "reason": failed[0].code if failed else None,
                           "checks": [c.to_map() for c in checks]})

        def checked(r: Reply) -> None:
            out, error = r.result()
            if error is not None:
                reply.fail(error)
                return
            result = out.result
            if account not in self.accounts.slot_limited:
                answer(result, [])
                return

            def counted(q: Reply) -> None:
                extra, err = q.result()
                if err is not None:
                    reply.fail(err)
                else:
                    answer(result, extra)

            self.accounts.slot_checks(account, signal.symbol, counted)

        self.to_ledger(profile_id, m.CheckRisk(signal=signal, policy=policy), checked)
        return reply

    # -- orders -----------------------------------------------------------------------

    def submit_order(self, profile_id: str, *, client_order_id: str, symbol: str, side: str,
                     type: str = "MARKET", qty: Any, price: Any = None, tp_price: Any = None,
                     sl_price: Any = None, reservation_id: str | None = None,
                     trigger_price: Any = None, time_in_force: str | None = None,
                     expire_at: Any = None, trail_amount: Any = None,
                     trail_pct: Any = None, trail_activation: Any = None,
                     position_id: str | None = None,
                     callback: Callable[[Reply], None] | None = None) -> Reply:
        """Record an order (capital reserved) and send it to the account's broker. The
        reply resolves to an Outcome whose result is the order (or, for a repeat of a
        finished order, its id). With `position_id`, the order adds to that open position
        (a scale-in, actors/model/scale_in.py)."""
        reply = Reply(callback)
        try:
            spec, amount, venue = self._order_spec(profile_id, client_order_id, symbol, side,
                                                   type, qty, price, tp_price, sl_price,
                                                   reservation_id, trigger_price,
                                                   time_in_force, expire_at, parse_trail(
                                                       trail_amount, trail_pct,
                                                       trail_activation), position_id)
        except Exception as exc:
            reply.fail(exc)
            return reply
        outer = reply
        if venue is None:
            venue = self.accounts.stale_prices(spec.account_id)
        if venue is not None:  # the venue refuses it: a repeat is still answered
            reply, refused = reply, venue
        elif spec.account_id in self.accounts.venue_priced:  # its venue lists the markets
            refused = None
        else:
            reply, refused = self._claim_symbol(spec.symbol, reply)
        cmd = m.PlaceOrder(spec=spec, amount=amount, cause=client_order_id)
        if refused is not None:  # a repeat of an order made before is still answered
            self.to_ledger(profile_id, msgspec.structs.replace(cmd, refusal=refused),
                           relay(reply))
        elif spec.account_id in self.accounts.slot_limited and position_id is None:
            def claimed(claim_id: int | None, denial: Denial | None) -> None:
                if denial is not None:  # a repeat of an order made before is still it
                    self.to_ledger(profile_id, msgspec.structs.replace(
                        cmd, refusal=denial), relay(reply))
                else:
                    self.to_ledger(profile_id, cmd, self._settling(
                        spec.account_id, claim_id, relay(reply)))

            self._claim_slot(spec.account_id, profile_id, spec.symbol, claimed, reply)
        else:
            self.to_ledger(profile_id, cmd, relay(reply))
        return outer

    def _order_spec(self, profile_id, client_order_id, symbol, side, type, qty, price,
                    tp_price, sl_price, reservation_id, trigger_price=None,
                    time_in_force=None, expire_at=None, trail=None, position_id=None
                    ) -> tuple[OrderSpec, Decimal, Denial | None]:
        """(the order, its reservation, the venue's refusal of it or None)."""
        self._known(profile_id)
        if not self.config.oms.enabled:
            raise Denied(Denial("RISK_REJECTED", "the order management system is disabled "
                                "([oms] enabled = false): no orders are taken",
                                {"reason": "OMS_DISABLED", "limit": False, "value": True}))
        side = parse_side(side)
        type = parse_order_type(type)
        tif = parse_time_in_force(time_in_force)
        expires = parse_expire_at(expire_at, tif, self.clock.now())
        if isinstance(client_order_id, str) and client_order_id.startswith(SIGNAL_KEY_PREFIX):
            raise InvalidArgument("client_order_id", f"client_order_id may not start with "
                                                     f"{SIGNAL_KEY_PREFIX!r}: the orders of "
                                                     "signals are keyed so")
        symbol = parse_symbol(symbol)
        q = parse_decimal(qty, "qty")
        px = None if price is None else parse_decimal(price, "price")
        tp = None if tp_price is None else parse_decimal(tp_price, "tp_price")
        sl = None if sl_price is None else parse_decimal(sl_price, "sl_price")
        trig = None if trigger_price is None else parse_decimal(trigger_price,
                                                                "trigger_price")
        check_order_fields(type, px, trig)
        tick = self.board.get(symbol)
        bid, ask = (tick.bid, tick.ask) if tick is not None else (None, None)
        reference = trig if type == "STOP" else px
        if reference is None:
            if tick is None:
                raise InvalidArgument("price", f"no market price for {symbol!r} yet: give "
                                               "a price")
            reference = ask if side == "BUY" else bid
        check_protection(side, reference, tp, sl)
        # a MARKET entry, or a LIMIT the market already crosses, fills at the market now:
        # its take-profit and stop-loss must not be crossed already
        # (a stop waits for its trigger: its market is not now's)
        marketable = type == "MARKET" or (type == "LIMIT" and (
            ask is not None and px >= ask if side == "BUY" else bid is not None and px <= bid))
        if marketable and (crossed := protective_crossed(side, tp, sl, bid, ask)):
            level = tp if crossed == "tp_price" else sl
            market = bid if side == "BUY" else ask
            raise InvalidArgument(crossed, f"{crossed} {level} is already crossed by the "
                                           f"market ({'bid' if side == 'BUY' else 'ask'} "
                                           f"{market}): it would close the position on its "
                                           "first tick")
        price_places, qty_places = self._places(symbol, reference)
        account = self.accounts.account_for(profile_id)
        rules = self.accounts.venue_rules(account)
        venue: Denial | None = None
        if rules is not None and (venue := venue_refusal(type, tif)) is not None:
            pass  # a live venue that cannot take it: refused before any reservation
        elif trail is not None and not self.accounts.supports_trailing(account):
            venue = unsupported_trail(account)
        elif rules is not None:  # a live venue: its steps replace the simulator's places
            rule = rules.rule(symbol)
            ruled = rule if isinstance(rule, Denial) else apply_rule(
                side, q, px, reference, rule)
            if isinstance(ruled, Denial):
                venue = ruled
            else:
                q, px = ruled
                price_places = max(price_places, _places_of(rule.price_tick))
        else:
            if q != q.quantize(Decimal(1).scaleb(-qty_places)):
                raise InvalidArgument("qty", f"qty has more than {qty_places} decimal places "
                                             f"for {symbol}")
            for name, value in (("price", px), ("tp_price", tp), ("sl_price", sl),
                                ("trigger_price", trig)):
                if value is not None and value != value.quantize(
                        Decimal(1).scaleb(-price_places)):
                    raise InvalidArgument(name, f"{name} has more than {price_places} "
                                                f"decimal places for {symbol}")
        check_trail_places(trail, price_places)
        self.accounts.require_connected(account)
        taker, maker = self._fees(account)
        places = self.accounts.places(account)
        # a MARKET / STOP reserves at the worse of the given price (a STOP's trigger) and
        # the market's, plus the slippage room: the broker fills it at most at `cap`, so
        # it never costs more than it reserved (a STOP that gaps past `cap` is canceled);
        # a limit at its price, a SELL's at most at the market's now (amend.py)
        amount, cap = reservation_for(type, side, q, px, reference, trig, Pricing(
            bid=bid, ask=ask, buffer_pct=self.config.oms.reserve_buffer_pct,
            taker_fee=taker, maker_fee=maker, places=places, price_places=price_places))
        if type in ("MARKET", "STOP") and rules is not None and venue is None:
            cap = price_to_tick("BUY", cap, rule)  # sent as a limit on the venue's tick
        order_id = new_id("ord")
        if position_id is not None:  # a scale-in: the position must be there to add to
            target = self._store().get_position(profile_id, position_id)
            check_target(target, position_id, symbol, side, account)
        spec = OrderSpec(order_id=order_id,
                         position_id=position_id or order_id.replace("ord_", "pos_", 1),
                         symbol=symbol, side=side, type=type, qty=q, price=px,
                         tp_price=tp, sl_price=sl, client_order_id=client_order_id,
                         account_id=account, reservation_id=reservation_id,
                         ref_price=reference, max_price=cap, trigger_price=trig,
                         time_in_force=tif, expire_at=expires, **order_trail(trail))
        return spec, amount, venue


def _places_of(step: Decimal) -> int:
    return max(0, -step.normalize().as_tuple().exponent)
