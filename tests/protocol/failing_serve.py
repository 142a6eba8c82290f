"""`capflow serve` whose gateway socket thread dies on one request, for
tests/protocol/test_watchdog.py: the request with op ``test.kill-socket-thread`` makes
the loop raise an exception nothing may catch (as a bug in the loop itself would)."""

from __future__ import annotations

import sys

from capflow import run
from capflow.protocol.server import Server

KILL = b"test.kill-socket-thread"


class SocketThreadKilled(BaseException):
    pass


_on_request = Server._on_request


def _dying_on_request(self, frames):
    if KILL in bytes(frames[-1]):
        raise SocketThreadKilled("killed on purpose by the test")
    return _on_request(self, frames)


if __name__ == "__main__":
    Server._on_request = _dying_on_request
    sys.exit(run.main(["serve"]))
