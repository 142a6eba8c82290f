"""The interface every broker adapter implements, and what they share.

An adapter is hosted by one `AccountManagerActor` (one per broker account) and is only
ever called from that actor's thread, so it needs no locks. It reports everything that
happens -- connection changes, fills, exits, cancels -- by calling `self.emit(event)`
with a `BrokerEvent` (`brokers.events`, with the records it describes orders, positions
and its account by); the account manager books fills on the profiles' ledgers.

Writing an adapter (see also docs/adapters.md):

1. Subclass `BrokerAdapter` and implement `connect`, `account_info`, `portfolio`,
   `submit_order`, `cancel_order`, `close_position` and `set_stops`.
2. `connect()` raises on failure; the base class retries with exponential backoff and
   jitter and gives up after ``connect.max_attempts`` (then emits `Disconnected`, and
   orders are refused with UNAVAILABLE until an operator restarts it). Call
   `self.connection_lost(reason)` when an established connection drops.
3. Translate symbols with `self.symbols.to_broker()` / `from_broker()`: capflow names on
   one side, the broker's on the other, from the account's ``symbols`` table in config.
4. Name the class in config: ``[brokers.accounts.mine] adapter = "mypkg.mod:MyBroker"``
   (capflow's own: ``"capflow.brokers.paper:PaperBroker"``; the name of before capflow
   was one package, ``"brokers.paper:PaperBroker"``, still loads, with a warning). The
   account managers load it (`capflow.actors.adapters.load_adapter`).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import ClassVar

from capflow.actors.model.errors import Unavailable
from capflow.actors.model.latency import Latency
from capflow.actors.model.prices import PriceWatch
from capflow.actors.model.settings import ConfigError
from capflow.actors.model.venue import VenueRules
from capflow.brokers.config import AccountConfig, ConnectConfig
from capflow.brokers.events import (
    AccountInfo,
    BrokerEvent,
    BrokerOrder,
    BrokerPosition,
    Connected,
    ConnectionFailed,
    Disconnected,
)

# -- symbols --------------------------------------------------------------------------


class SymbolMap:
    """capflow symbol <-> broker symbol; unmapped symbols are the same on both sides."""

    def __init__(self, table: dict[str, str]):
        self._out = dict(table)
        self._in = {v: k for k, v in table.items()}
        if len(self._in) != len(self._out):
            raise ConfigError("broker symbol table maps two capflow symbols to one broker "
                              "symbol")

    def to_broker(self, symbol: str) -> str:
        return self._out.get(symbol, symbol)

    def from_broker(self, symbol: str) -> str:
        return self._in.get(symbol, symbol)


# -- the connection state machine -----------------------------------------------------

DISCONNECTED, CONNECTING, CONNECTED, WAITING, GAVE_UP = (
    "DISCONNECTED", "CONNECTING", "CONNECTED", "WAITING", "GAVE_UP")

#: what `connect()` returns when it only started connecting (on a thread of its own):
#: the adapter reports the outcome later with `connection.succeeded()` / `failed(exc)`
PENDING = object()


class PermanentConnectError(Exception):
    """A connection failure that retrying cannot mend (a missing or rejected key, a
    setting the venue does not know): the connection gives up at once. Its message names
    the setting to fix."""


class Connection:
    """Connect, retry with exponential backoff and jitter, give up after a maximum.

    The n-th failed attempt in a row waits ``min(max_delay, base * 2**(n-1))`` times a
    random factor in ``[1 - jitter, 1 + jitter]`` before the next one. Time comes from
    the injected clock and moves on `poll()`, so tests drive it by hand.
    """

    def __init__(self, account_id: str, cfg: ConnectConfig, clock, connect: Callable[[], None],
                 emit: Callable[[BrokerEvent], None], rng: random.Random):
        self.account_id = account_id
        self.cfg = cfg
        self.clock = clock
        self._connect = connect
        self._emit = emit
        self.rng = rng
        self.state = DISCONNECTED
        self.failures = 0
        self.next_attempt_at: datetime | None = None
        #: every backoff delay chosen so far, for inspection
        self.delays: list[float] = []
        self.last_error = ""

    def delay(self, failures: int) -> float:
        base = min(self.cfg.max_delay_s, self.cfg.base_delay_s * 2 ** (failures - 1))
        j = self.cfg.jitter
        return base * self.rng.uniform(1 - j, 1 + j) if j else base

    def begin(self) -> None:
        self.failures = 0
        self.attempt()

    def attempt(self) -> None:
        self.state = CONNECTING
        try:
            result = self._connect()
        except Exception as exc:
            self.failed(exc)
            return
        if result is not PENDING:
            self.succeeded()

    def failed(self, exc: BaseException) -> None:
        """The attempt under way failed: wait and retry, or give up."""
        now = self.clock.now()
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if (self.failures >= self.cfg.max_attempts
                or isinstance(exc, PermanentConnectError)):
            self.state = GAVE_UP
            self.next_attempt_at = None
            self._emit(Disconnected(account_id=self.account_id, ts=now,
                                    reason=self.last_error, attempts=self.failures))
            return
        wait = self.delay(self.failures)
        self.delays.append(wait)
        self.state = WAITING
        self.next_attempt_at = now + timedelta(seconds=wait)
        self._emit(ConnectionFailed(account_id=self.account_id, ts=now,
                                    attempt=self.failures, error=self.last_error,
                                    retry_in_s=wait))

    def succeeded(self) -> None:
        """The attempt under way succeeded."""
        now = self.clock.now()
        attempts = self.failures + 1
        self.state = CONNECTED
        self.failures = 0
        self.next_attempt_at = None
        self._emit(Connected(account_id=self.account_id, ts=now, attempt=attempts))

    def poll(self) -> None:
        if (self.state == WAITING and self.next_attempt_at is not None
                and self.clock.now() >= self.next_attempt_at):
            self.attempt()

    def lost(self, reason: str) -> None:
        """An established connection dropped: retry after the first backoff delay."""
        if self.state != CONNECTED:
            return
        self.failures = 1
        self.last_error = reason
        wait = self.delay(1)
        self.delays.append(wait)
        now = self.clock.now()
        self.state = WAITING
        self.next_attempt_at = now + timedelta(seconds=wait)
        self._emit(ConnectionFailed(account_id=self.account_id, ts=now, attempt=1,
                                    error=reason, retry_in_s=wait))


# -- the adapter ----------------------------------------------------------------------


class BrokerAdapter(ABC):
    """One broker account. Lifecycle: ``__init__`` -> `init` -> `start` -> `step` (called
    by the account manager on every tick it receives and on a timer) -> `shutdown`."""

    #: True when the adapter's orders reach a real venue (real money, a testnet's too);
    #: ``broker_mode = "live"`` (``BROKER_MODE``) needs at least one such account, and
    #: ``"paper"`` none
    live: ClassVar[bool] = False
    #: True when the adapter publishes its venue's prices (`VenueTicks`) for the symbols
    #: of its ``symbols`` table and of its orders and positions: those are then priced by
    #: the venue only, and the simulator does not simulate them
    venue_prices: ClassVar[bool] = False

    def __init__(self, account_id: str, config: AccountConfig, *, clock,
                 emit: Callable[[BrokerEvent], None], money_places: int = 2,
                 rng: random.Random | None = None, ids: Callable[[str], str] | None = None):
        self.account_id = account_id
        self.config = config
        self.clock = clock
        self.emit = emit
        self.money_places = money_places
        self.symbols = SymbolMap(config.symbols)
        self.subscriptions: set[str] = set()
        self._ids = ids or _counter_ids()
        self.connection = Connection(account_id, config.connect, clock, self.connect, emit,
                                     rng or random.Random())
        #: the venue's instrument rules (None: this adapter has none); the account
        #: manager shows them to the entry flow, which rounds and checks entries by them
        self.venue_rules: VenueRules | None = None
        #: how fresh the venue's prices are (None: the adapter publishes none); the entry
        #: flow refuses entries with STALE_PRICES while they are stale
        self.prices: PriceWatch | None = None
        #: how long its orders took from their send to the venue's acknowledgement
        #: (None: the adapter does not measure it); shown by the metrics endpoint
        self.latency: Latency | None = None
        #: set by the account manager: asks it to call `step()` on its own thread soon
        #: (an adapter whose I/O runs on threads of its own calls it when results wait)
        self.wake: Callable[[], None] = _nothing

    @classmethod  # noqa: B027 -- optional hook
    def check_config(cls, account_id: str, config: AccountConfig) -> None:
        """At load, before anything starts: raise `ConfigError` naming the setting
        when the account's configuration cannot work. No I/O."""

    @classmethod
    def variant(cls, config: AccountConfig) -> type[BrokerAdapter]:
        """The class that serves an account of this adapter with `config`: itself, unless
        a setting picks another (the paper broker on a venue's market data). No I/O."""
        return cls

    def new_id(self, prefix: str) -> str:
        return self._ids(prefix)

    # -- lifecycle --------------------------------------------------------------------

    def init(self) -> None:  # noqa: B027 -- optional hook
        """Read settings, build clients; nothing touches the network yet."""

    def start(self) -> None:
        self.connection.begin()

    def step(self) -> None:
        """The main step: drives reconnection; adapters add their periodic work."""
        self.connection.poll()

    def shutdown(self) -> None:
        if self.connection.state == CONNECTED:
            self.disconnect()
        self.connection.state = DISCONNECTED

    # -- connection -------------------------------------------------------------------

    @abstractmethod
    def connect(self) -> None:
        """Open the connection; raise on failure."""

    def disconnect(self) -> None:  # noqa: B027 -- optional hook
        """Close the connection."""

    @property
    def connected(self) -> bool:
        return self.connection.state == CONNECTED

    def connection_lost(self, reason: str) -> None:
        self.connection.lost(reason)

    def require_connected(self) -> None:
        c = self.connection
        if c.state == CONNECTED:
            return
        if c.state == GAVE_UP:
            raise Unavailable(f"broker account {self.account_id!r} is disconnected: gave up "
                              f"after {c.failures} attempts ({c.last_error})",
                              {"account_id": self.account_id, "state": c.state})
        raise Unavailable(f"broker account {self.account_id!r} is not connected "
                          f"({c.state.lower()})", {"account_id": self.account_id,
                                                   "state": c.state})

    # -- account ----------------------------------------------------------------------

    @abstractmethod
    def account_info(self) -> AccountInfo: ...

    @abstractmethod
    def portfolio(self) -> list[BrokerPosition]: ...

    # -- market data ------------------------------------------------------------------

    def subscribe(self, symbol: str) -> None:
        self.subscriptions.add(symbol)

    def unsubscribe(self, symbol: str) -> None:
        self.subscriptions.discard(symbol)

    def on_tick(self, tick) -> None:  # noqa: B027 -- brokers with their own data ignore it
        """A tick of the market simulator (paper trading)."""

    # -- orders -----------------------------------------------------------------------

    @abstractmethod
    def submit_order(self, order: BrokerOrder) -> None:
        """Send an entry order; fills come back as `EntryFilled` events."""

    @abstractmethod
    def cancel_order(self, order_id: str, reason: str = "canceled") -> bool:
        """Cancel what is left of a working order; False if there is no such order.
        `reason` travels with the `OrderCanceled` it reports (a halt names itself)."""

    @abstractmethod
    def close_position(self, position_id: str, reason: str = "manual") -> bool:
        """Close a position at market; False if there is no such open position."""

    #: whether it watches trailing stops (`set_stops` with a trail, `BrokerOrder.trail`):
    #: capflow refuses a trail (``VENUE_UNSUPPORTED_ORDER``) on an adapter without
    supports_trailing = False

    @abstractmethod
    def set_stops(self, position_id: str, tp_price: Decimal | None,
                  sl_price: Decimal | None) -> bool:
        """Attach (or replace) the take-profit / stop-loss pair of a position (OCO). An
        adapter with `supports_trailing` takes a keyword ``trail`` too (a
        `capflow.actors.model.trailing.Trail`, None: none): the trailing stop it
        watches from then on, reporting each move as `TrailMoved`; without it, the trail
        it watches stays as it is."""

    def amend_order(self, order_id: str, qty: Decimal, price: Decimal | None,
                    trigger_price: Decimal | None, max_price: Decimal | None) -> bool | None:
        """Change a working order's quantity, price, trigger price and the highest price
        it may fill at; False if there is no such working order; None (this default):
        the venue adapter cannot amend orders."""
        return None

    def reduce_position(self, position_id: str, qty: Decimal) -> bool | None:
        """Close `qty` of a position at market (a partial exit, reported as a
        `PositionExited` of that quantity); False if there is no such open position or a
        close or reduce of it is under way; None (this default): the adapter cannot."""
        return None

    def restore(self, orders: Iterable[BrokerOrder],
                positions: Iterable[BrokerPosition]) -> None:
        """After a restart: what capflow's storage says is working and open. A live
        broker reconciles this with its own view; the default re-sends the orders and
        re-attaches the stops, then asks again for the closes not filled yet."""
        positions = list(positions)
        for p in positions:
            if p.trail is not None and self.supports_trailing:
                self.set_stops(p.position_id, p.tp_price, p.sl_price, trail=p.trail)
            else:
                self.set_stops(p.position_id, p.tp_price, p.sl_price)
        for o in orders:
            self.submit_order(o)
        for p in positions:
            if p.closing is not None:
                self.close_position(p.position_id, p.closing)


def _nothing() -> None:
    pass


def _counter_ids() -> Callable[[str], str]:
    n = 0

    def new(prefix: str) -> str:
        nonlocal n
        n += 1
        return f"{prefix}_{n}"

    return new
