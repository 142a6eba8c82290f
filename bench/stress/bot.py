"""One simulated bot: a process sending a seeded mix of operations to capflow.

A bot behaves as a careful bot should: every mutation carries an idempotency key where
the op has one, and an answer that leaves the outcome unknown (no answer, ``TIMEOUT``,
``UNAVAILABLE``, ``RATE_LIMITED``) is retried with the same keys until a definite
answer comes or the bot gives up. It writes two files in the run folder:

- ``bot-<i>.requests.jsonl``: one ``[t, op, ms, code]`` line per attempt (``t`` seconds
  since the run started, ``code`` ``ok`` or the error code, or ``NO_ANSWER``);
- ``bot-<i>.acks.jsonl``: one line per mutation answered ``ok``, with what the answer
  said (ids, amounts); the audit checks each one against storage.

Now and then (`REPEAT_P`) a bot repeats a reservation or a signal that was already
answered ``ok``, with the same key and content, as a bot that lost the answer would:
the answer must name the same object (the audit compares the ids per key), and any
other answer is logged as ``repeat_refused`` (a violation).
"""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

#: answers that leave the outcome unknown (or the request not admitted): retry
RETRY_CODES = frozenset({"TIMEOUT", "UNAVAILABLE", "RATE_LIMITED", "NO_ANSWER"})
#: how often a bot repeats a mutation already answered ok, with the same key and content
#: (the answer must be the same object, `reused`)
REPEAT_P = 0.1

DEFAULT_MIX = {"quote": 3, "reserve": 2, "release": 2, "signal": 2, "close": 1, "query": 2}
OPS = tuple(DEFAULT_MIX)


def parse_mix(text: str | None) -> dict[str, float]:
    """``quote=3,signal=2``: weights of the bots' operations (others default to 0)."""
    if not text:
        return dict(DEFAULT_MIX)
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, weight = part.strip().partition("=")
        if name not in OPS or not sep:
            raise ValueError(f"--mix: {part!r} is not NAME=WEIGHT with NAME one of "
                             f"{', '.join(OPS)}")
        try:
            mix[name] = float(weight)
        except ValueError:
            raise ValueError(f"--mix: weight {weight!r} of {name} is not a number") from None
        if mix[name] < 0:
            raise ValueError(f"--mix: weight of {name} is negative")
    if not any(mix.values()):
        raise ValueError("--mix: every weight is zero")
    return mix


@dataclass
class BotSpec:
    index: int
    endpoint: str
    profiles: list[str]
    symbols: list[str]
    mix: dict[str, float]
    seed: int
    run_dir: str
    #: wall-clock time the run started (time.time()), the origin of every `t`
    t0: float
    #: wall-clock time after which the bot starts no new operation
    deadline: float
    #: per attempt (the client resends the same bytes `retries` times within it)
    timeout_s: float = 1.0
    #: an operation still without a definite answer after this long is abandoned
    give_up_s: float = 60.0
    pause_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Bot:
    def __init__(self, spec: BotSpec, counter=None, stop=None):
        from capflow.protocol.client import Client

        self.spec = spec
        self.rng = random.Random(spec.seed * 1000 + spec.index)
        self.client = Client(spec.endpoint, timeout_s=spec.timeout_s, retries=1)
        self.counter = counter
        self.stop = stop
        run = Path(spec.run_dir)
        self.requests = open(run / f"bot-{spec.index}.requests.jsonl", "w")  # noqa: SIM115
        self.acks = open(run / f"bot-{spec.index}.acks.jsonl", "w")  # noqa: SIM115
        self.prefix = f"b{spec.index}-{uuid.uuid4().hex[:6]}"
        self.n = 0
        self.reservations: list[tuple[str, str]] = []  # (profile, reservation id)
        self.positions: list[tuple[str, str]] = []  # (profile, position id)
        self.prices: dict[str, Decimal] = {}
        ops, weights = zip(*[(k, v) for k, v in spec.mix.items() if v > 0], strict=True)
        self.ops, self.weights = list(ops), list(weights)
        self.done = 0
        self.abandoned = 0

    # -- plumbing ---------------------------------------------------------------------

    def _key(self, kind: str) -> str:
        self.n += 1
        return f"{self.prefix}-{kind}-{self.n}"

    def call(self, op: str, **args: Any) -> tuple[str, Any]:
        """One operation to a definite answer: (code, result or error details). Unknown
        outcomes are retried with the same arguments (so the same idempotency keys)."""
        from capflow.protocol.client import ClientError, ClientTimeout

        give_up = time.monotonic() + self.spec.give_up_s
        while True:
            sent = time.time()
            try:
                result = self.client.call(op, **args)
                code, value = "ok", result
            except ClientTimeout:
                code, value = "NO_ANSWER", None
            except ClientError as exc:
                code, value = exc.code, exc.details
            ms = (time.time() - sent) * 1000.0
            self.requests.write(f'[{sent - self.spec.t0:.4f},"{op}",{ms:.3f},"{code}"]\n')
            if code not in RETRY_CODES:
                return code, value
            if time.monotonic() > give_up:
                self.abandoned += 1
                return code, value
            time.sleep(0.05 if code != "NO_ANSWER" else 0.0)

    def ack(self, **fields: Any) -> None:
        fields["t"] = round(time.time() - self.spec.t0, 4)
        self.acks.write(json.dumps(fields) + "\n")
        self.acks.flush()

    # -- the operations ---------------------------------------------------------------

    def profile(self) -> str:
        return self.rng.choice(self.spec.profiles)

    def symbol(self) -> str:
        return self.rng.choice(self.spec.symbols)

    def op_quote(self) -> None:
        self.call("allocation.quote", profile_id=self.profile(), symbol=self.symbol())

    def op_reserve(self) -> None:
        pid, sym = self.profile(), self.symbol()
        key = self._key("r")
        amount = f"{self.rng.randint(20, 400)}.{self.rng.randint(0, 99):02d}"
        args = {"profile_id": pid, "symbol": sym, "amount": amount,
                "client_request_id": key, "ttl_s": 900}

        def acked(r: dict) -> None:
            self.ack(op="reserve", pid=pid, key=key, rid=r["reservation_id"], amount=amount,
                     symbol=sym, reused=r.get("reused", False))

        r = self._mutate("allocation.reserve", args, key, acked)
        if r is not None:
            self.reservations.append((pid, r["reservation_id"]))

    def _mutate(self, op: str, args: dict, key: str, acked) -> dict | None:
        """Send a keyed mutation; on ok, log it (`acked`), and now and then repeat it
        with the same key and content as a bot that lost the answer would."""
        code, r = self.call(op, **args)
        if code != "ok":
            return None
        acked(r)
        if self.rng.random() < REPEAT_P:
            code, again = self.call(op, **args)
            if code == "ok":
                acked(again)
            else:
                self.ack(op="repeat_refused", pid=args["profile_id"], key=key, code=code)
        return r

    def op_release(self) -> None:
        if not self.reservations:
            return self.op_reserve()
        pid, rid = self.reservations.pop(self.rng.randrange(len(self.reservations)))
        code, _ = self.call("allocation.release", profile_id=pid, reservation_id=rid)
        if code == "ok":
            self.ack(op="release", pid=pid, rid=rid)

    def _price(self, symbol: str) -> Decimal | None:
        if symbol not in self.prices or self.rng.random() < 0.1:
            code, r = self.call("market.price", symbol=symbol)
            if code == "ok":
                self.prices[symbol] = Decimal(r["last"])
        return self.prices.get(symbol)

    def op_signal(self) -> None:
        pid, sym = self.profile(), self.symbol()
        price = self._price(sym)
        if price is None:
            return
        sid = self._key("s")
        side = self.rng.choice(("BUY", "SELL"))
        args = {"profile_id": pid, "symbol": sym, "side": side, "price": str(price),
                "timestamp": time.time(), "signal_id": sid,
                "strategy": f"bot{self.spec.index}",
                "notional": str(self.rng.randint(50, 800)),
                "tp_pct": str(self.rng.choice(("0.3", "0.5", "1"))),
                "sl_pct": str(self.rng.choice(("0.3", "0.5", "1")))}

        def acked(r: dict) -> None:
            self.ack(op="signal", pid=pid, sid=sid, risk_ok=r["risk_ok"],
                     reason=r.get("risk_reason"), order_id=r.get("order_id"),
                     position_id=r.get("position_id"), reused=r.get("reused", False))

        r = self._mutate("signal.submit", args, sid, acked)
        if r is not None and r["risk_ok"] and r.get("position_id"):
            self.positions.append((pid, r["position_id"]))

    def op_close(self) -> None:
        if not self.positions:
            return self.op_signal()
        pid, pos = self.positions.pop(self.rng.randrange(len(self.positions)))
        code, _ = self.call("position.close", profile_id=pid, position_id=pos)
        if code == "ok":
            self.ack(op="close", pid=pid, position_id=pos)

    def op_query(self) -> None:
        pid = self.profile()
        op = self.rng.choice(("ledger.get", "position.list", "order.list", "profile.get"))
        if op in ("position.list", "order.list"):
            self.call(op, profile_id=pid, limit=50)
        else:
            self.call(op, profile_id=pid)

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        try:
            while time.time() < self.spec.deadline and not (self.stop and self.stop.is_set()):
                op = self.rng.choices(self.ops, self.weights)[0]
                getattr(self, f"op_{op}")()
                self.done += 1
                if self.counter is not None:
                    self.counter[self.spec.index] = self.done
                if self.spec.pause_s:
                    time.sleep(self.spec.pause_s)
        finally:
            self.requests.close()
            self.acks.close()
            self.client.close()
        return self.done


def main(spec: BotSpec, counter=None, stop=None) -> None:
    """The entry point of a bot process (multiprocessing, spawn)."""
    Bot(spec, counter, stop).run()
