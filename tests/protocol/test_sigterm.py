"""SIGTERM during load: the server stops taking requests, finishes the in-flight ones,
flushes storage; every request that got an `ok` answer is in storage after restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import select

from capflow.protocol.client import Client, ClientError
from capflow.storage import schema as s

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigterm_under_load_loses_no_acknowledged_request(tmp_path, make_system):
    url = f"sqlite:///{tmp_path}/srv.db"
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    env = {**os.environ, "CAPFLOW_STORAGE__URL": url, "CAPFLOW_SERVER__ENDPOINT": endpoint,
           "CAPFLOW_SERVER__EVENTS_ENDPOINT": f"tcp://127.0.0.1:{_free_port()}",
           "CAPFLOW_LOG__LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "run.py", "serve"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with Client(endpoint, timeout_s=0.5, retries=20) as c:
            c.health()  # retries until the server is up
            for i in range(4):
                c.profile_create(f"p{i}", "100000")
        acked: list[tuple[str, str]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def bot(n: int) -> None:
            with Client(endpoint, timeout_s=0.5, retries=1) as c:
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        r = c.allocation_reserve(f"p{n % 4}", "BTCUSDT", "1",
                                                 client_request_id=f"b{n}-{i}")
                    except ClientError:  # UNAVAILABLE or TIMEOUT once stopping: fine
                        continue
                    with lock:
                        acked.append((f"p{n % 4}", r["reservation_id"]))

        bots = [threading.Thread(target=bot, args=(n,)) for n in range(8)]
        for t in bots:
            t.start()
        deadline = time.monotonic() + 20
        while len(acked) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stderr.read()
        stop.set()
        for t in bots:
            t.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(acked) >= 300
    system = make_system(url)
    with system.engine.connect() as conn:
        stored = {r.reservation_id: r.profile_id for r in conn.execute(
            select(s.reservations.c.reservation_id, s.reservations.c.profile_id))}
    missing = [a for a in acked if stored.get(a[1]) != a[0]]
    assert not missing, f"{len(missing)} acknowledged reservations lost"
    for i in range(4):
        assert system.audit(f"p{i}").ok
