"""A live gateway on loopback (random ports) over a real System, and raw-socket helpers."""

from __future__ import annotations

import uuid

import msgpack
import pytest
import zmq

from capflow.protocol.server import Server

from .market import SETTINGS, write_ticks


@pytest.fixture
def live(make_system, sqlite_url):
    """Start a System and its Server; yields a factory so tests can pass config."""
    servers: list[Server] = []

    def start(url: str | None = None, **sections) -> Server:
        server_cfg = {"endpoint": "tcp://127.0.0.1:*", "events_endpoint": "tcp://127.0.0.1:*",
                      **sections.pop("server", {})}
        system = make_system(url or sqlite_url, server=server_cfg, **sections)
        server = Server(system).start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        server.stop()


class Raw:
    """A bare DEALER socket speaking msgpack frames, no client library in between."""

    def __init__(self, endpoint: str, timeout_ms: int = 5000):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.timeout_ms = timeout_ms

    def send_bytes(self, payload: bytes) -> None:
        self.sock.send_multipart([b"", payload])

    def recv(self, timeout_ms: int | None = None) -> dict | None:
        if not self.sock.poll(self.timeout_ms if timeout_ms is None else timeout_ms):
            return None
        frames = self.sock.recv_multipart()
        assert frames[0] == b"", frames
        return msgpack.unpackb(frames[-1], raw=False)

    def request(self, op: str, args: dict | None = None, **envelope) -> dict:
        msg = {"v": 1, "id": uuid.uuid4().hex, "op": op, "args": args or {}, **envelope}
        self.send_bytes(msgpack.packb(msg))
        reply = self.recv()
        assert reply is not None, f"no reply to {op}"
        return reply

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


@pytest.fixture
def raw():
    made: list[Raw] = []

    def connect(endpoint: str, timeout_ms: int = 5000) -> Raw:
        r = Raw(endpoint, timeout_ms)
        made.append(r)
        return r

    yield connect
    for r in made:
        r.close()


@pytest.fixture
def market(live, raw, tmp_path):
    """A server replaying `steps` (default: TESTUSDT at 100.00 / 100.20 for a few
    steps) with the paper broker's fees (`SETTINGS`); returns (server, raw socket)."""

    def start(steps=None, **sections):
        steps = steps or [[("TESTUSDT", "100.00", "100.20")]] * 4
        replay = write_ticks(tmp_path / "ticks.csv", steps)
        sections.setdefault("brokers", {"accounts": {"paper": {"settings": SETTINGS}}})
        simulator = {"replay": replay, "symbols": {}, **sections.pop("simulator", {})}
        server = live(simulator=simulator, **sections)
        return server, raw(server.endpoint)

    return start
