"""CURVE security on the gateway (docs/protocol.md, Transport): only client keys listed in the
key directory are served at all, and each key touches only the profiles it is given
(anything else: FORBIDDEN). A plain-mode server keeps serving plain clients.
"""

from __future__ import annotations

import json
import tomllib
import uuid
from pathlib import Path

import msgpack
import pytest
import zmq
import zmq.auth

from capflow.protocol.auth import generate
from capflow.protocol.client import Client, ClientError, ClientTimeout, CurveKeys


def _public(keys_dir: Path, name: str) -> str:
    public, _ = zmq.auth.load_certificate(str(keys_dir / f"{name}.key"))
    return public.decode()


def _write_clients(keys_dir: Path, grants: dict[str, list[str]]) -> None:
    """Rewrite clients.toml: exactly these clients, with these profiles."""
    text = "".join(f'[clients."{name}"]\npublic_key = "{_public(keys_dir, name)}"\n'
                   f"profiles = {json.dumps(profiles)}\n\n"
                   for name, profiles in grants.items())
    (keys_dir / "clients.toml").write_text(text)


@pytest.fixture
def keys(tmp_path) -> Path:
    d = tmp_path / "keys"
    generate(d, ["bot1", "bot2", "bot3", "stranger"])
    # generate lists every new client with no profiles
    table = tomllib.loads((d / "clients.toml").read_text())["clients"]
    assert sorted(table) == ["bot1", "bot2", "bot3", "stranger"]
    assert all(entry["profiles"] == [] for entry in table.values())
    assert table["stranger"]["public_key"] == _public(d, "stranger")
    # stranger keeps its key files but is no longer listed
    _write_clients(d, {"bot1": ["alpha"], "bot2": ["*"], "bot3": ["p1", "p3", "p4"]})
    assert (d / "stranger.key_secret").exists()
    assert "stranger" not in tomllib.loads((d / "clients.toml").read_text())["clients"]
    return d


@pytest.fixture
def server(live, keys):
    return live(security={"curve": True, "keys_dir": str(keys)})


@pytest.fixture
def connect(server, keys):
    """A CURVE Client for one of the generated keys (or a key pair from elsewhere)."""
    made: list[Client] = []

    def make(name: str, *, keys_dir: Path | None = None, server_key: Path | None = None,
             timeout_s: float = 3.0, retries: int = 0) -> Client:
        d = keys_dir or keys
        curve = CurveKeys.load(str(server_key or keys / "server.key"),
                               str(d / f"{name}.key_secret"))
        client = Client(server.endpoint, timeout_s=timeout_s, retries=retries, curve=curve)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def _code(call) -> ClientError:
    with pytest.raises(ClientError) as info:
        call()
    return info.value


def _forbidden(call, profile_id: str) -> None:
    err = _code(call)
    assert not isinstance(err, ClientTimeout), err
    assert err.code == "FORBIDDEN", err
    assert err.details == {"profile_id": profile_id}, err.details


# -- (a) unknown keys and (d) plain clients get no answer at all ----------------------------

def test_an_unlisted_key_gets_no_reply_and_listed_keys_are_still_served(server, connect,
                                                                         keys, tmp_path):
    bot1 = connect("bot1")
    assert bot1.health()["security"] == "curve"

    stranger = connect("stranger", timeout_s=0.5, retries=0)
    with pytest.raises(ClientTimeout):
        stranger.health()
    assert stranger.attempts == 1

    # a key made in another directory (never listed anywhere)
    generate(tmp_path / "elsewhere", ["outsider"])
    outsider = connect("outsider", keys_dir=tmp_path / "elsewhere", timeout_s=0.5)
    with pytest.raises(ClientTimeout):
        outsider.profile_create("alpha", "100")

    # a listed key that expects the wrong server key fails the handshake too
    wrong_server = connect("bot2", server_key=tmp_path / "elsewhere" / "server.key",
                           timeout_s=0.5)
    with pytest.raises(ClientTimeout):
        wrong_server.health()

    # the refused handshakes changed nothing, and listed keys are still served
    assert bot1.health()["status"] == "ok"
    bot2 = connect("bot2")
    assert bot2.health()["profiles"] == 0
    assert bot2.profile_list()["profiles"] == []


def test_a_plain_client_gets_no_reply_from_a_curve_server(server, raw):
    with Client(server.endpoint, timeout_s=0.5, retries=1) as plain:
        with pytest.raises(ClientTimeout):
            plain.health()
        assert plain.attempts == 2

    dealer = raw(server.endpoint, timeout_ms=500)
    dealer.send_bytes(msgpack.packb({"v": 1, "id": "plain-1", "op": "system.health",
                                     "args": {}}))
    assert dealer.recv() is None


# -- (b) per-key profiles: FORBIDDEN for anything else ----------------------------------------

def test_a_key_touches_only_its_profiles(connect):
    bot1, bot2 = connect("bot1"), connect("bot2")
    beta = bot2.profile_create("beta", "5000")
    assert beta["profile_id"] == "beta" and beta["reused"] is False

    alpha = bot1.profile_create("alpha", "1000")
    assert alpha["profile_id"] == "alpha" and alpha["ledger"]["available"] == "1000.00"
    assert bot1.profile_get("alpha")["state"] == "ACTIVE"
    r = bot1.allocation_reserve("alpha", "BTCUSDT", "250", client_request_id="k-1")
    assert r["amount"] == "250.00" and r["reused"] is False
    ledger = bot1.ledger_get("alpha")
    assert (ledger["held"], ledger["available"]) == ("250.00", "750.00")
    again = bot1.allocation_reserve("alpha", "BTCUSDT", "250", client_request_id="k-1")
    assert again["reservation_id"] == r["reservation_id"] and again["reused"] is True
    assert bot1.allocation_release("alpha", r["reservation_id"])["released"] is True
    assert bot1.ledger_deposit("alpha", "10")["available"] == "1010.00"

    # everything on beta (and on profiles that do not even exist) is FORBIDDEN for bot1
    _forbidden(lambda: bot1.ledger_get("beta"), "beta")
    _forbidden(lambda: bot1.allocation_reserve("beta", "BTCUSDT", "100"), "beta")
    _forbidden(lambda: bot1.profile_get("beta"), "beta")
    _forbidden(lambda: bot1.profile_set_state("beta", "HALTED"), "beta")
    _forbidden(lambda: bot1.ledger_deposit("beta", "1"), "beta")
    _forbidden(lambda: bot1.ledger_withdraw("beta", "1"), "beta")
    _forbidden(lambda: bot1.allocation_release("beta", "r-1"), "beta")
    _forbidden(lambda: bot1.profile_create("beta", "5000"), "beta")
    _forbidden(lambda: bot1.profile_create("gamma", "1"), "gamma")  # not NOT_FOUND either
    _forbidden(lambda: bot1.ledger_get("gamma"), "gamma")

    # the denied calls changed nothing on beta; "*" may touch every profile
    assert bot2.ledger_get("beta")["available"] == "5000.00"
    assert bot2.ledger_get("beta")["held"] == "0.00"
    assert bot2.profile_get("beta")["state"] == "ACTIVE"
    assert bot2.ledger_get("alpha")["available"] == "1010.00"
    assert bot2.health()["profiles"] == 2
    with pytest.raises(ClientError) as info:
        bot1.profile_create("gamma", "1")
    assert info.value.code == "FORBIDDEN"
    with pytest.raises(ClientError) as info:
        bot2.ledger_get("gamma")
    assert info.value.code == "NOT_FOUND"


# -- (c) profile.list shows only what the key may touch ---------------------------------------

def test_profile_list_shows_only_the_keys_profiles(connect):
    bot1, bot2 = connect("bot1"), connect("bot2")
    for pid in ("aaa", "alpha", "beta", "zeta"):
        bot2.profile_create(pid, "100")

    mine = bot1.profile_list()
    assert [p["profile_id"] for p in mine["profiles"]] == ["alpha"]
    assert mine["profiles"][0]["ledger"]["available"] == "100.00"
    assert mine["next_cursor"] is None
    one = bot1.profile_list(limit=1)
    assert [p["profile_id"] for p in one["profiles"]] == ["alpha"]
    assert bot1.profile_list(cursor="alpha")["profiles"] == []

    everything = bot2.profile_list()
    assert [p["profile_id"] for p in everything["profiles"]] == ["aaa", "alpha", "beta", "zeta"]

    # a key with no profiles at all lists nothing
    assert connect("bot3").profile_list()["profiles"] == []


def _pages(client: Client, limit: int) -> list[str]:
    seen, cursor = [], None
    for _ in range(10):
        page = client.profile_list(limit=limit, cursor=cursor)
        seen += [p["profile_id"] for p in page["profiles"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError(f"no end of the pages: {seen}")


def test_profile_list_pages_for_a_key_with_some_profiles(connect):
    bot2, bot3 = connect("bot2"), connect("bot3")
    for pid in ("p1", "p2", "p3", "p4"):
        bot2.profile_create(pid, "100")
    assert _pages(bot3, 3) == ["p1", "p3", "p4"]
    assert _pages(bot3, 1) == ["p1", "p3", "p4"]
    # limit 2 over all ids would see [p1, p2] then [p3, p4]: filtering must not make the
    # pages skip p4 (a regression of an earlier over-fetch-and-truncate paging)
    assert _pages(bot3, 2) == ["p1", "p3", "p4"]
    first = bot3.profile_list(limit=2)
    assert [p["profile_id"] for p in first["profiles"]] == ["p1", "p3"]
    assert first["next_cursor"] == "p3"
    assert _pages(bot2, 2) == ["p1", "p2", "p3", "p4"]


# -- dedup is per CURVE key ---------------------------------------------------------------------

def _dealer(server, keys: Path, name: str) -> tuple[zmq.Context, zmq.Socket]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    CurveKeys.load(str(keys / "server.key"), str(keys / f"{name}.key_secret")).apply(sock)
    sock.connect(server.endpoint)
    return ctx, sock


def _ask(sock: zmq.Socket, rid: str, op: str, args: dict) -> dict:
    sock.send_multipart([b"", msgpack.packb({"v": 1, "id": rid, "op": op, "args": args})])
    assert sock.poll(3000), f"no reply to {op}"
    frames = sock.recv_multipart()
    return msgpack.unpackb(frames[-1], raw=False)


def test_repeated_ids_are_cached_per_key_not_across_keys(server, keys, connect):
    connect("bot2").profile_create("beta", "500")
    connect("bot1").profile_create("alpha", "100")
    rid = uuid.uuid4().hex
    sockets = [_dealer(server, keys, name) for name in ("bot1", "bot1", "bot2")]
    try:
        (_, first), (_, same_key), (_, other_key) = sockets
        a = _ask(first, rid, "allocation.reserve", {"profile_id": "alpha", "symbol": "BTCUSDT",
                                                    "amount": "10", "client_request_id": "d-1"})
        assert a["ok"] is True and a["id"] == rid, a
        # the same key on another connection: the first answer, not a second execution
        b = _ask(same_key, rid, "allocation.reserve", {"profile_id": "alpha",
                                                       "symbol": "BTCUSDT", "amount": "10",
                                                       "client_request_id": "d-2"})
        assert b == a
        # another key with the same id gets its own answer, never bot1's
        c = _ask(other_key, rid, "ledger.get", {"profile_id": "beta"})
        assert c["ok"] is True and c["result"]["profile_id"] == "beta", c
        assert c["result"]["available"] == "500.00"
    finally:
        for ctx, sock in sockets:
            sock.close(0)
            ctx.term()
    assert connect("bot1").ledger_get("alpha")["held"] == "10.00"  # reserved once


# -- plain mode sanity ------------------------------------------------------------------------

def test_a_plain_server_serves_a_plain_client(live):
    server = live()
    with Client(server.endpoint, timeout_s=3, retries=0) as c:
        health = c.health()
        assert health["status"] == "ok" and health["security"] == "plain"
        assert health["protocol"] == 1
        c.profile_create("alpha", "100")
        c.profile_create("beta", "200")
        listed = c.profile_list()
        assert [p["profile_id"] for p in listed["profiles"]] == ["alpha", "beta"]
        assert c.ledger_get("beta")["available"] == "200.00"
