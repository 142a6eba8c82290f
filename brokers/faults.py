"""A paper broker with a fault switch, for chaos runs (``capflow stress --chaos stall``).

`StallablePaperBroker` is the paper broker, except that while the file named by its
``stall_file`` setting exists, every call the account manager makes into it blocks, as
an adapter blocks on a broker that stopped answering: the manager's mailbox stops
moving, and capflow must answer what depends on it with ``TIMEOUT`` or ``UNAVAILABLE``,
never with a wrong ``ok``. Removing the file ends the stall; a stall also ends by itself
after ``stall_max_s`` (default 30 s), so a forgotten file cannot hang a server for good.

    [brokers.accounts.paper]
    adapter = "capflow.brokers.faults:StallablePaperBroker"
    settings = { stall_file = "/tmp/capflow.stall" }
"""

from __future__ import annotations

import os
import time
from decimal import Decimal

from capflow.brokers.events import AccountInfo, BrokerOrder, BrokerPosition
from capflow.brokers.paper import PaperBroker

_POLL_S = 0.02


class StallablePaperBroker(PaperBroker):
    def init(self) -> None:
        settings = dict(self.config.settings)
        self.stall_file = settings.get("stall_file")
        self.stall_max_s = float(settings.get("stall_max_s", 30.0))
        self.stalls = 0
        super().init()

    def _stall(self) -> None:
        if not self.stall_file or not os.path.exists(self.stall_file):
            return
        self.stalls += 1
        # "<stall_file>.held" exists while a call is blocked: the sign that the stall has
        # the manager (the harness waits for it before it sends its witness request)
        held = f"{self.stall_file}.held"
        with open(held, "w"):
            pass
        try:
            until = time.monotonic() + self.stall_max_s
            while os.path.exists(self.stall_file) and time.monotonic() < until:
                time.sleep(_POLL_S)
        finally:
            try:
                os.unlink(held)
            except FileNotFoundError:
                pass

    def account_info(self) -> AccountInfo:
        self._stall()
        return super().account_info()

    def portfolio(self) -> list[BrokerPosition]:
        self._stall()
        return super().portfolio()

    def submit_order(self, order: BrokerOrder) -> None:
        self._stall()
        super().submit_order(order)

    def cancel_order(self, order_id: str, reason: str = "canceled") -> bool:
        self._stall()
        return super().cancel_order(order_id, reason)

    def close_position(self, position_id: str, reason: str = "manual") -> bool:
        self._stall()
        return super().close_position(position_id, reason)

    def set_stops(self, position_id: str, tp_price: Decimal | None,
                  sl_price: Decimal | None, **trail) -> bool:
        self._stall()
        return super().set_stops(position_id, tp_price, sl_price, **trail)

    def on_tick(self, tick) -> None:
        self._stall()
        super().on_tick(tick)
