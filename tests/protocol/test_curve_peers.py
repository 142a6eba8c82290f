"""What listed CURVE keys can do to the gateway and to each other over the wire: event
subscribers that come and go never stop the socket thread, and one key never receives,
or stops, another key's answers (not even with the other key's routing id).
"""

from __future__ import annotations

import io
import sqlite3
import threading
import time
import tomllib
import uuid
from pathlib import Path

import msgpack
import pytest
import zmq

from capflow import run
from capflow.actors.model.settings import ConfigError
from capflow.protocol.auth import generate
from capflow.protocol.client import Client, CurveKeys

from .test_curve import _write_clients

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


# -- one key never receives, or stops, another key's answers -------------------------------

BOT_ROUTE = b"bot-1"  # a stable routing id, as bots were told to use: easy to guess


def test_another_key_with_the_bots_routing_id_gets_none_of_its_answers(gateway, peer):
    bot = peer("bot2", routing_id=BOT_ROUTE)
    assert bot.request("profile.create", {"profile_id": "beta",
                                          "allocated": "1000"})["ok"] is True
    attacker, sent_by_attacker, bot_ids = None, set(), set()
    for i in range(300):
        if i == 50:  # another listed key connects with the bot's routing id
            attacker = peer("bot1", routing_id=BOT_ROUTE)
            time.sleep(0.2)
        if attacker is not None and i % 25 == 0:
            sent_by_attacker.add(attacker.send("system.health"))
        rid = bot.send("ledger.get", {"profile_id": "beta"})
        bot_ids.add(rid)
        reply = bot.recv(3000)
        assert reply is not None, f"the bot's request {i} was not answered"
        assert reply["id"] == rid and reply["ok"] is True, reply
    got = []
    while (reply := attacker.recv(500)) is not None:
        got.append(reply["id"])
    assert not set(got) & bot_ids, "the other key received the bot's answers"
    assert set(got) <= sent_by_attacker


def _hold_the_database(server) -> sqlite3.Connection:
    """Lock the SQLite file as another writer would: commits wait (busy_timeout)."""
    path = server.config.storage.url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


def test_an_answer_never_follows_a_routing_id_to_another_key(gateway, peer):
    """The bot's connection goes while its request runs; another key connects with the
    bot's routing id before the answer is ready: the answer is not sent to it, and the
    bot, back on a new connection, gets it by resending the request's id."""
    bot = peer("bot2", routing_id=BOT_ROUTE)
    assert bot.request("profile.create", {"profile_id": "beta",
                                          "allocated": "1000"})["ok"] is True
    lock = _hold_the_database(gateway)
    try:
        deposit = {"profile_id": "beta", "amount": "5", "client_request_id": "d-1"}
        rid = bot.send("ledger.deposit", deposit)  # waits for the database
        time.sleep(0.3)
        bot.close()
        time.sleep(0.5)  # the server has seen the bot's connection close
        attacker = peer("bot1", routing_id=BOT_ROUTE)
        mine = attacker.request("system.health")  # the routing id is the attacker's now
        assert mine["ok"] is True
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    back = peer("bot2")  # a new connection, no routing id of its own
    back.send("ledger.deposit", deposit, rid=rid)
    answer = back.recv(5000)
    assert answer is not None and answer["id"] == rid and answer["ok"] is True, answer
    assert answer["result"]["allocated"] == "1005.00" and answer["result"]["reused"] is False
    stray = attacker.recv(1000)
    assert stray is None, f"the other key received {stray}"


def test_plain_mode_still_hands_a_routing_id_over_to_the_new_connection(live):
    """Without authentication a reconnecting client keeps its identity by its routing
    id (ZMQ_ROUTER_HANDOVER), even while its old connection is still open."""
    server = live()
    ctx = zmq.Context()
    try:
        socks = []
        for _ in range(2):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.ROUTING_ID, b"plain-bot")
            s.connect(server.endpoint)
            socks.append(s)
            time.sleep(0.2)
        socks[1].send_multipart([b"", msgpack.packb({"v": 1, "id": "h-1",
                                                     "op": "system.health"})])
        assert socks[1].poll(3000), "the new connection was not served"
        reply = msgpack.unpackb(socks[1].recv_multipart()[-1], raw=False)
        assert reply["id"] == "h-1" and reply["ok"] is True
    finally:
        ctx.destroy(0)


def test_the_client_needs_no_routing_id_under_curve(gateway, keys_dir):
    curve = CurveKeys.load(str(keys_dir / "server.key"), str(keys_dir / "bot2.key_secret"))
    with Client(gateway.endpoint, curve=curve, timeout_s=0.4, retries=20) as c:
        sock = c._open()
        assert sock.getsockopt(zmq.ROUTING_ID) == b""  # the server names the connection
        sock.close(0)
        c.profile_create("beta", "1000")
        lock = _hold_the_database(gateway)
        release = threading.Timer(1.5, lambda: (lock.execute("ROLLBACK"), lock.close()))
        release.start()
        before = c.attempts
        # times out, reconnects with a new routing id, resends the same id: one deposit
        answer = c.ledger_deposit("beta", "5", client_request_id="d-1")
        release.join()
        assert c.attempts - before > 1 and answer["reused"] is False
        assert c.ledger_get("beta")["allocated"] == "1005.00"


def test_health_tells_restricted_keys_neither_the_profile_count_nor_the_storage(peer):
    admin = peer("bot2")
    for pid in ("alpha", "beta", "gamma"):
        assert admin.request("profile.create", {"profile_id": pid,
                                                "allocated": "10"})["ok"] is True
    full = admin.request("system.health")["result"]
    assert full["profiles"] == 3 and full["storage"].startswith("sqlite:///")
    for name in ("bot1", "bot3"):  # granted alpha only; granted nothing
        health = peer(name).request("system.health")["result"]
        assert health["profiles"] is None and health["storage"] is None, health
        assert health["reasons"] is None  # they name profiles and accounts
        assert (health["status"], health["security"]) == ("ok", "curve")
        hidden = ("profiles", "storage", "uptime_s", "reasons")
        assert {k: v for k, v in health.items() if k not in hidden} == {
            k: v for k, v in full.items() if k not in hidden}


def test_a_public_key_listed_twice_stops_the_server_at_start(live, keys_dir):
    table = keys_dir / "clients.toml"
    bot1 = tomllib.loads(table.read_text())["clients"]["bot1"]["public_key"]
    # the same key again under another name, with every profile: which grant would win?
    table.write_text(table.read_text()
                     + f'[clients."copy"]\npublic_key = "{bot1}"\nprofiles = ["*"]\n')
    with pytest.raises(ConfigError, match=r"clients\.copy has the public key of bot1"):
        live(security={"curve": True, "keys_dir": str(keys_dir)})


def test_capflow_events_with_a_listed_key_then_requests_are_still_answered(gateway, peer,
                                                                           keys_dir):
    """The report's reproduction: `capflow events --count 2` with a listed key."""
    bot = peer("bot2")
    assert bot.request("profile.create", {"profile_id": "beta",
                                          "allocated": "1000"})["ok"] is True
    for _ in range(2):
        args = run._parser().parse_args([
            "events", "--count", "2", "--endpoint", gateway.events_endpoint,
            "--server-key", str(keys_dir / "server.key"),
            "--client-key", str(keys_dir / "bot2.key_secret")])
        out = io.StringIO()
        listener = threading.Thread(target=run.events_command,
                                    args=(gateway.system.config, args, out), daemon=True)
        listener.start()
        deadline = time.monotonic() + 10
        while listener.is_alive() and time.monotonic() < deadline:
            _deposit(bot)
            listener.join(0.2)
        assert not listener.is_alive(), "capflow events saw no events"
        assert [line.split()[0] for line in out.getvalue().splitlines()] == [
            "ledger.beta"] * 2
        time.sleep(0.2)  # its socket is closed: the server gets its unsubscription
        health = bot.request("system.health")
        assert health["ok"] is True and health["result"]["status"] == "ok"


def test_a_command_under_curve_probes_with_its_keys_and_says_what_is_wrong(
        gateway, keys_dir, tmp_path, capsys):
    """Before, each of these waited out its retries and printed a bare TIMEOUT."""
    import zmq.auth

    zmq.auth.create_certificates(tmp_path, "stranger")  # a key the server does not list
    call = ["call", "system.health", "--endpoint", gateway.endpoint, "--timeout", "0.5"]
    server_key = str(keys_dir / "server.key")
    cases = [
        ([], "uses CURVE (security.curve = true): give --server-key and --client-key"),
        (["--server-key", server_key, "--client-key", str(tmp_path / "stranger.key_secret")],
         "refused this client's CURVE key (is its public key listed in the server's "
         "clients.toml?)"),
        (["--server-key", str(keys_dir / "bot1.key"),
          "--client-key", str(keys_dir / "bot1.key_secret")],
         "the CURVE handshake with"),
    ]
    for keys, said in cases:
        assert run.main([*call, *keys]) == 1
        got = capsys.readouterr()
        assert got.out == "" and said in got.err, (keys, got)
        assert got.err.startswith("capflow: ") and gateway.endpoint in got.err
    # the right keys: the probe and the request both get through, also for a key
    # granted a single profile
    for name in ("bot2", "bot1"):
        keys = ["--server-key", server_key, "--client-key",
                str(keys_dir / f"{name}.key_secret")]
        assert run.main([*call, *keys]) == 0
        assert '"security": "curve"' in capsys.readouterr().out
