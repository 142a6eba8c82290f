"""The Python clients: Lazy Pirate retries are safe, the async client pipelines."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import select

from capflow.protocol.client import AsyncClient, Client, ClientError, ClientTimeout
from capflow.storage import schema as s


def test_a_delayed_server_makes_the_client_retry_and_exactly_one_reservation_exists(live):
    server = live()
    system = server.system
    with Client(server.endpoint, timeout_s=2) as c:
        c.profile_create("p", "500")
    real_submit = system.allocation.to_ledger
    delayed = {"n": 0}

    def slow_submit(pid, cmd, callback=None):  # the first reserve answers after 1.2 s
        if type(cmd).__name__ == "ReserveCapital" and delayed["n"] == 0 and callback:
            delayed["n"] += 1

            def later(reply):
                threading.Timer(1.2, callback, args=(reply,)).start()
            return real_submit(pid, cmd, later)
        return real_submit(pid, cmd, callback)

    system.allocation.to_ledger = slow_submit
    with Client(server.endpoint, timeout_s=0.4, retries=6) as c:
        r = c.allocation_reserve("p", "BTCUSDT", "120", client_request_id="once")
        assert c.attempts >= 3  # it timed out, reopened its socket and resent
    assert delayed["n"] == 1
    with system.engine.connect() as conn:
        rows = conn.execute(select(s.reservations).where(
            s.reservations.c.profile_id == "p")).all()
    assert [row.reservation_id for row in rows] == [r["reservation_id"]]
    assert str(system.ledger("p").held) == r["amount"] == "120.00"


def test_no_server_gives_a_clear_timeout_after_bounded_retries():
    with Client("tcp://127.0.0.1:9", timeout_s=0.1, retries=2) as c:
        with pytest.raises(ClientTimeout) as err:
            c.health()
        assert c.attempts == 3 and err.value.code == "TIMEOUT"


def test_errors_come_back_with_code_and_details(live):
    server = live()
    with Client(server.endpoint, timeout_s=2) as c:
        with pytest.raises(ClientError) as err:
            c.ledger_get("ghost")
        assert err.value.code == "NOT_FOUND" and err.value.details["kind"] == "profile"


def test_the_async_client_keeps_many_requests_in_flight(live):
    server = live()

    async def scenario():
        c = AsyncClient(server.endpoint, timeout_s=5)
        try:
            await c.profile_create("a", "10000")
            replies = await asyncio.gather(*[
                c.allocation_reserve("a", "ETHUSDT", "10", client_request_id=f"k{i}")
                for i in range(200)])
            ledger = await c.ledger_get("a")
        finally:
            await c.close()
        return replies, ledger

    replies, ledger = asyncio.run(scenario())
    assert len({r["reservation_id"] for r in replies}) == 200
    assert ledger["held"] == "2000.00" and ledger["available"] == "8000.00"
