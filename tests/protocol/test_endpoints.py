"""Endpoints that cannot work: `capflow serve` on a port in use, a malformed endpoint, or
one endpoint for requests and events; a command given an endpoint ZeroMQ cannot connect
to. Each is one line naming the setting and the cause, never a ZMQError traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ..test_run import free_endpoint

CAPFLOW = str(Path(sys.executable).with_name("capflow"))


def _serve(tmp_path, endpoint: str, events: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPFLOW_")}
    env.update(CAPFLOW_SERVER__ENDPOINT=endpoint, CAPFLOW_SERVER__EVENTS_ENDPOINT=events,
               CAPFLOW_LOG__LEVEL="WARNING")
    return subprocess.run([CAPFLOW, "serve"], cwd=tmp_path, env=env, timeout=120,
                          capture_output=True, text=True)


def test_serve_on_a_port_in_use_names_the_setting(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve(tmp_path, free_endpoint(), f"tcp://127.0.0.1:{port}")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert (f"capflow: [server] events_endpoint = 'tcp://127.0.0.1:{port}': cannot listen "
            "there: Address already in use") in done.stderr


@pytest.mark.parametrize("endpoint, said", [
    ("localhost:7100", "[server] endpoint = 'localhost:7100': cannot listen there"),
    ("same", "[server] events_endpoint is endpoint"),
])
def test_serve_with_an_endpoint_that_cannot_work_names_it(tmp_path, endpoint, said):
    events = free_endpoint()
    done = _serve(tmp_path, events if endpoint == "same" else endpoint, events)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and said in done.stderr, done.stderr


@pytest.mark.parametrize("endpoint", ["localhost:7100", "tcp://127.0.0.1",
                                      "http://127.0.0.1:7100"])
@pytest.mark.parametrize("command", [["call", "system.health"], ["events"],
                                     ["profile", "list"]])
def test_a_command_given_a_malformed_endpoint_says_what_one_looks_like(command, endpoint):
    done = subprocess.run([CAPFLOW, *command, "--endpoint", endpoint], timeout=30,
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith(f"capflow: INVALID_ARGUMENT (endpoint): {endpoint!r} is "
                                  "not an endpoint to connect to"), done.stderr
    assert done.stderr.endswith("write tcp://HOST:PORT, e.g. tcp://127.0.0.1:7100\n")
    assert done.stderr.count("\n") == 1
