"""Child process for tests/test_crash.py: makes acknowledged mutations until killed.

Each line it prints is written only after the mutation's answer came back, i.e. after
its commit; the parent treats every printed line as an acknowledged mutation.
"""

from __future__ import annotations

import json
import random
import sys
import threading

from capflow.actors.config import load_config
from capflow.actors.model.errors import Denied
from capflow.actors.system import System

PROFILES = ("crash-a", "crash-b", "crash-c")


def main(url: str, run: str) -> None:
    system = System(load_config(env={}, storage={"url": url})).start()
    for pid in PROFILES:
        system.create_profile(pid, "50000")
    out_lock = threading.Lock()

    def say(**fields) -> None:
        line = json.dumps(fields, default=str)
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    say(op="ready")

    def worker(n: int) -> None:
        rnd = random.Random(f"{run}-{n}")
        held: list[tuple[str, str]] = []
        i = 0
        while True:
            i += 1
            pid = rnd.choice(PROFILES)
            roll = rnd.random()
            key = f"{run}-{n}-{i}"
            try:
                if roll < 0.55:
                    amount = f"{rnd.randint(1, 500)}.{rnd.randint(0, 99):02d}"
                    r = system.reserve(pid, "BTCUSDT", amount, key, ttl_s=3600)
                    held.append((pid, r.reservation.reservation_id))
                    say(op="reserve", pid=pid, key=key, rid=r.reservation.reservation_id,
                        amount=amount)
                elif roll < 0.85 and held:
                    rpid, rid = held.pop(rnd.randrange(len(held)))
                    system.release(rpid, rid)
                    say(op="release", pid=rpid, rid=rid)
                elif roll < 0.93:
                    amount = f"{rnd.randint(1, 100)}.00"
                    system.deposit(pid, amount, key)
                    say(op="deposit", pid=pid, key=key, amount=amount)
                else:
                    amount = f"{rnd.randint(1, 100)}.00"
                    system.withdraw(pid, amount, key)
                    say(op="withdraw", pid=pid, key=key, amount=amount)
            except Denied:
                pass

    for n in range(8):
        threading.Thread(target=worker, args=(n,), daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
