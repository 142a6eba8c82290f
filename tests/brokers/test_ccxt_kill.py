"""A real `capflow serve` with a live account on the Bybit emulator, SIGKILLed while an
order is at the venue and its answer not yet seen: after the restart the order is found
by its client id, not sent again, and its fill booked once."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal as D

from capflow.protocol.client import Client

from .venue_kit import KEY_ENV, SECRET_ENV, wait


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _toml(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def test_sigkill_with_an_order_in_flight_then_restart_books_it_once(tmp_path, bybit_venue):
    venue = bybit_venue
    db = tmp_path / "kill.db"
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    settings = {"exchange": "bybit", "api_key_env": KEY_ENV, "api_secret_env": SECRET_ENV,
                "urls": venue.urls, "timeout_s": 20, "poll_interval_s": 0.05,
                "price_interval_s": 0.05, "reconcile_every_s": 0}
    config = tmp_path / "capflow.toml"
    config.write_text(f"""
[storage]
url = "sqlite:///{db}"
[server]
endpoint = "{endpoint}"
events_endpoint = "tcp://127.0.0.1:{_free_port()}"
[simulator]
symbols = {{}}
[brokers]
default_account = "live"
[brokers.accounts.live]
adapter = "capflow.brokers.ccxt_venue:CcxtSpotBroker"
currency = "USDT"
initial_cash = "10000"
symbols = {{ BTCUSDT = "BTC/USDT" }}
settings = {_toml(settings)}
""")
    env = {**os.environ, KEY_ENV: "venue-key", SECRET_ENV: "venue-secret",
           "CAPFLOW_LOG__LEVEL": "WARNING"}

    def serve() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "capflow.run", "--config", str(config),
                                 "serve"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    # the venue places the order and holds its answer (longer than the test lasts)
    venue.fault("/v5/order/create", "lose", delay=25)
    proc = serve()
    try:
        with Client(endpoint, timeout_s=1, retries=30) as c:
            c.health()
            wait(lambda: c.account_get("live")["connection"] == "CONNECTED", 20)
            c.profile_create("p", "5000")
            a = c.call("signal.submit", profile_id="p", symbol="BTCUSDT", side="BUY",
                       price="30000.10", qty="0.01", signal_id="A", timestamp=time.time())
            assert a["risk_ok"], a
        wait(lambda: venue.orders(), 20)  # placed (and filled) at the venue
        time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)  # the answer is not seen yet
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    venue.clear_faults()
    proc = serve()
    try:
        with Client(endpoint, timeout_s=1, retries=30) as c:
            c.health()
            led = wait(lambda: (x := c.ledger_get("p"))["reserved_for_positions"] != "0.00"
                       and x, 20)
            assert led["reserved_for_orders"] == "0.00", led
            time.sleep(0.5)  # polls and lookups: nothing more is sent
            report = c.account_reconcile("live")
        assert report["differences"] == 0, report
        assert len(venue.requests("/v5/order/create")) == 1
        assert len(venue.orders()) == 1
        with sqlite3.connect(db) as conn:
            rows = conn.execute("select qty from fills").fetchall()
        assert [D(q) for (q,) in rows] == [D("0.01")]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
