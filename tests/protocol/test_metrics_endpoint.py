"""The gateway's request counts on the metrics endpoint of the System it serves, scraped
over HTTP while the server runs; `system.health` names the endpoint."""

from __future__ import annotations

import time

import pytest
import zmq

from capflow.protocol.client import Client, ClientError
from capflow.protocol.server import Server

from ..metrics_kit import scrape, value
from .test_curve_peers import Peer, keys_dir  # noqa: F401 -- the keys_dir fixture

WIRE = {"endpoint": "tcp://127.0.0.1:*", "events_endpoint": "tcp://127.0.0.1:*"}


def test_requests_served_are_counted_by_op_and_outcome(make_system, sqlite_url):
    cf = make_system(sqlite_url, metrics={"listen": "127.0.0.1:0"}, server=WIRE)
    server = Server(cf).start()
    try:
        with Client(server.endpoint, timeout_s=10, retries=1) as c:
            assert c.health()["metrics"] == cf.metrics_address
            c.health()
            with pytest.raises(ClientError):
                c.call("profile.get", profile_id="ghost")
        # the server counts a request as its answer goes out: the last may still be on
        # its way into the counters when the client has the answer
        deadline = time.monotonic() + 10
        while True:
            got = scrape(cf)
            counted = (value(got, "capflow_requests_total", op="system.health", outcome="ok"),
                       value(got, "capflow_requests_total", op="profile.get",
                             outcome="NOT_FOUND"),
                       value(got, "capflow_requests_in_flight"))
            if counted == (2, 1, 0) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert counted == (2, 1, 0)
    finally:
        server.stop()
    # the server stopped: its collector left the registry, the System's metrics stay
    got = scrape(cf)
    assert "capflow_requests" not in got and "capflow_health" in got


def test_a_server_without_metrics_registers_nothing(make_system, sqlite_url):
    cf = make_system(sqlite_url, server=WIRE)
    server = Server(cf).start()
    try:
        with Client(server.endpoint, timeout_s=10, retries=1) as c:
            assert c.health()["metrics"] is None
    finally:
        server.stop()


def test_a_key_granted_some_profiles_is_not_told_where_the_metrics_are(
        live, keys_dir):  # noqa: F811 -- the fixture
    gateway = live(security={"curve": True, "keys_dir": str(keys_dir)},
                   metrics={"listen": "127.0.0.1:0"})
    answers = {}
    for name in ("bot2", "bot1"):  # granted every profile; granted alpha only
        p = Peer(keys_dir, name, zmq.DEALER, gateway.endpoint)
        try:
            answers[name] = p.request("system.health")["result"]["metrics"]
        finally:
            p.close()
    assert answers["bot2"] == gateway.system.metrics_address
    assert answers["bot1"] is None
