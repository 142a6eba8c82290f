"""LedgerActor through the System: races against one profile, durability of answers,
failure of a write, passivation and re-activation."""

from __future__ import annotations

import random
import threading
import time
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from capflow.actors.model.errors import Denied, Unavailable
from capflow.storage import schema as s

D = Decimal


def _persisted_active_holds(system, pid):
    with system.engine.connect() as c:
        rows = c.execute(select(s.reservations.c.reservation_id, s.reservations.c.amount,
                                s.reservations.c.status)
                         .where(s.reservations.c.profile_id == pid)).all()
    return {r.reservation_id: r.amount for r in rows if r.status == "ACTIVE"}, len(rows)


def test_32_threads_x_200_reserves_against_one_profile_never_overspend(make_system,
                                                                       sqlite_url):
    system = make_system(sqlite_url)
    system.create_profile("hot", "10000")
    granted: list[tuple[str, Decimal]] = []
    denied = []
    released = []
    errors = []
    lock = threading.Lock()
    start = threading.Barrier(32)

    def worker(n: int) -> None:
        rnd = random.Random(n)
        start.wait()
        mine = []
        for i in range(200):
            amount = D(rnd.randint(100, 9000)) / 100
            try:
                r = system.reserve("hot", "BTCUSDT", amount, f"t{n}-{i}")
                mine.append(r.reservation.reservation_id)
                with lock:
                    granted.append((r.reservation.reservation_id, amount))
            except Denied as exc:
                assert exc.code == "INSUFFICIENT_CAPITAL"
                assert D(exc.details["requested"]) > D(exc.details["available"])
                with lock:
                    denied.append(amount)
            except Exception as exc:  # anything else is a failure of the test
                with lock:
                    errors.append(exc)
            if mine and rnd.random() < 0.15:  # give some back so the race goes on
                rid = mine.pop(rnd.randrange(len(mine)))
                system.release("hot", rid)
                with lock:
                    released.append(rid)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert len(granted) + len(denied) == 32 * 200
    assert denied, "the race must have hit the limit"
    active = {rid: amt for rid, amt in granted if rid not in set(released)}
    total_active = sum(active.values(), D(0))
    assert total_active <= D("10000.00")
    led = system.ledger("hot")
    assert led.held == total_active and led.available == D("10000.00") - total_active
    assert led.available >= 0
    persisted, rows = _persisted_active_holds(system, "hot")
    assert persisted == active  # storage agrees, reservation by reservation
    assert rows == len(granted)
    assert system.audit("hot").ok


def test_an_answer_is_given_only_after_its_commit(make_system, sqlite_url):
    system = make_system(sqlite_url)
    system.create_profile("p", "100")
    for i in range(20):
        r = system.reserve("p", "ETHUSDT", "1", f"k{i}")
        # read from a separate connection: the row is already committed
        with system.engine.connect() as c:
            status = c.execute(select(s.reservations.c.status).where(
                s.reservations.c.reservation_id == r.reservation.reservation_id)).scalar()
        assert status == "ACTIVE"


def test_a_failed_write_is_answered_unavailable_and_the_ledger_reloads(make_system,
                                                                       sqlite_url):
    # the thread writer, so that the test can make its SQL fail
    system = make_system(sqlite_url, storage={"writer": "thread"})
    system.create_profile("p", "1000")
    system.reserve("p", "X", "100", "before")
    executor = system.writer.executor
    real_commit = executor._commit
    failures = {"n": 0}

    def flaky(items):
        if any(row.get("amount") == D("13.00") for _pid, ops, _snap in items
               for _k, t, row in ops if t == "reservations"):
            failures["n"] += 1
            raise OperationalError("INSERT", {}, Exception("disk I/O error"))
        return real_commit(items)

    executor._commit = flaky
    with pytest.raises(Unavailable):
        system.reserve("p", "X", "13", "doomed")
    assert failures["n"] >= 1
    # the in-memory hold of the failed write is gone: the actor reloaded from storage
    deadline = time.monotonic() + 5
    while system.ledger("p").held != D("100.00") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert system.ledger("p").held == D("100.00")
    r = system.reserve("p", "X", "14", "after")
    assert r.reservation.amount == D("14.00")
    assert system.ledger("p").held == D("114.00")
    assert system.audit("p").ok


def test_passivation_hands_over_everything_to_the_next_activation(make_system, sqlite_url):
    system = make_system(sqlite_url, ledger={"max_live": 1})
    system.create_profile("a", "1000")
    system.create_profile("b", "1000")
    for i in range(30):  # every call evicts the other profile's actor
        system.reserve("a", "X", "1", f"a{i}")
        system.reserve("b", "X", "2", f"b{i}")
    assert system.ledger("a").held == D("30.00")
    assert system.ledger("b").held == D("60.00")
    assert system.registry.live_count() == 1
    assert system.registry.passivations >= 59


def test_idle_actors_are_passivated_and_come_back_with_their_state(make_system, sqlite_url):
    system = make_system(sqlite_url, ledger={"idle_s": 0.05})
    system.create_profile("p", "500")
    system.reserve("p", "X", "50", "k")
    assert system.registry.live_count() == 1
    time.sleep(0.1)
    assert system.registry.passivate_idle() == 1
    assert system.registry.live_count() == 0
    assert system.ledger("p").held == D("50.00")
    assert system.reserve("p", "X", "50", "k").reused


def test_unknown_profile_is_not_found_without_an_actor(make_system, sqlite_url):
    from capflow.actors.model.errors import NotFound

    system = make_system(sqlite_url)
    with pytest.raises(NotFound):
        system.ledger("nobody")
    assert system.registry.live_count() == 0
