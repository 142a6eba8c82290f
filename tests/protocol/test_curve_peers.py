"""What listed CURVE keys can do to the gateway and to each other over the wire: event
subscribers that come and go never stop the socket thread, and one key never receives,
or stops, another key's answers (not even with the other key's routing id).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import msgpack
import pytest
import zmq

from protocol.auth import generate
from protocol.client import CurveKeys
from tests.protocol.test_curve import _write_clients

#: bot2 is granted every profile (and so the event stream), bot1 only alpha, bot3 none
GRANTS = {"bot1": ["alpha"], "bot2": ["*"], "bot3": []}


@pytest.fixture
def keys_dir(tmp_path) -> Path:
    d = tmp_path / "keys"
    generate(d, sorted(GRANTS))
    _write_clients(d, GRANTS)
    return d


@pytest.fixture
def gateway(live, keys_dir):
    return live(security={"curve": True, "keys_dir": str(keys_dir)})


class Peer:
    """A bare CURVE socket for one key of the key directory."""

    def __init__(self, keys_dir: Path, name: str, kind: int, endpoint: str,
                 routing_id: bytes | None = None):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        if routing_id is not None:
            self.sock.setsockopt(zmq.ROUTING_ID, routing_id)
        CurveKeys.load(str(keys_dir / "server.key"),
                       str(keys_dir / f"{name}.key_secret")).apply(self.sock)
        self.sock.connect(endpoint)

    def send(self, op: str, args: dict | None = None, rid: str | None = None) -> str:
        rid = rid or uuid.uuid4().hex
        self.sock.send_multipart([b"", msgpack.packb({"v": 1, "id": rid, "op": op,
                                                      "args": args or {}})])
        return rid

    def recv(self, timeout_ms: int = 3000) -> dict | None:
        if not self.sock.poll(timeout_ms):
            return None
        return msgpack.unpackb(self.sock.recv_multipart()[-1], raw=False)

    def request(self, op: str, args: dict | None = None, timeout_ms: int = 3000) -> dict:
        rid = self.send(op, args)
        reply = self.recv(timeout_ms)
        assert reply is not None, f"no answer to {op}"
        assert reply["id"] == rid, reply
        return reply

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


@pytest.fixture
def peer(gateway, keys_dir):
    made: list[Peer] = []

    def make(name: str, kind: int = zmq.DEALER, *, events: bool = False,
             routing_id: bytes | None = None) -> Peer:
        endpoint = gateway.events_endpoint if events else gateway.endpoint
        p = Peer(keys_dir, name, kind, endpoint, routing_id)
        made.append(p)
        return p

    yield make
    for p in made:
        if not p.sock.closed:
            p.close()


def _deposit(p: Peer, pid: str = "beta") -> None:
    reply = p.request("ledger.deposit", {"profile_id": pid, "amount": "1",
                                         "client_request_id": uuid.uuid4().hex})
    assert reply["ok"] is True, reply


def _subscribed(sub: Peer, bot: Peer, wait_s: float = 5.0) -> bool:
    """Deposit until the subscriber sees an event (a SUB socket misses what is published
    before its subscription reached the server)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        _deposit(bot)
        if sub.sock.poll(200):
            topic, _ = sub.sock.recv_multipart()
            assert topic == b"ledger.beta"
            return True
    return False


# -- event subscribers that come and go ----------------------------------------------------

def test_subscribers_that_come_and_go_never_stop_the_socket_thread(gateway, peer):
    bot = peer("bot2")  # granted every profile: gets the event stream
    assert bot.request("profile.create", {"profile_id": "beta",
                                          "allocated": "1000"})["ok"] is True
    for round_ in range(4):
        sub = peer("bot2", zmq.SUB, events=True)
        sub.sock.setsockopt(zmq.SUBSCRIBE, b"ledger." if round_ % 2 else b"")
        assert _subscribed(sub, bot), "the subscription never took effect"
        # a restricted key subscribes too, and is refused
        other = peer("bot1", zmq.SUB, events=True)
        other.sock.setsockopt(zmq.SUBSCRIBE, b"")
        sub.close()  # its unsubscription comes from libzmq, without any metadata
        other.close()
        time.sleep(0.2)
        health = bot.request("system.health")
        assert health["ok"] is True and health["result"]["status"] == "ok", health
    assert gateway.failure is None
    assert gateway._thread.is_alive()
