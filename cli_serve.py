"""`capflow serve`: start in order (storage and actors, then the gateway), serve until
SIGINT or SIGTERM, stop in reverse.

Before it starts anything it looks whether the storage is free. A storage that another
capflow process owns (its owner lock is held) is either a server that runs (it answers
at the endpoint: this one fails at once and says so) or one that is stopping (it lets go
once its last batch is written: this one says whom it waits for, and how long, and fails
naming that process if it does not let go). Ctrl-C or SIGTERM during that wait, or
during the start, stops the start without a traceback.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

from loguru import logger

from capflow.actors.config import Config
from capflow.actors.model.errors import Unavailable
from capflow.cli import storage_owner
from capflow.protocol.probe import NoServer, probe

#: how long a starting server waits for the storage's owner to let go (a server that
#: is stopping writes its last batch first)
LOCK_WAIT_S = 15.0


def _say(text: str) -> None:
    print(f"capflow: {text}", file=sys.stderr, flush=True)


def wait_for_storage(cfg: Config, stop: threading.Event,
                     wait_s: float = LOCK_WAIT_S) -> bool:
    """Return once the configured storage is free (True), or when `stop` is set (False).
    Raises `Unavailable` naming the owner when a capflow server answers at this
    server's endpoint (it runs: waiting changes nothing), or when the owner has not let
    go after `wait_s`."""
    owner = storage_owner(cfg)
    if owner is None:
        return True
    endpoint = cfg.server.endpoint
    try:
        probe(endpoint)
        answers = True
    except NoServer as exc:
        answers = exc.present  # a server under CURVE refused a client without keys
    except Exception:  # an endpoint that cannot work: the gateway says so, later
        answers = False
    if answers:
        raise Unavailable(f"a capflow server already answers at {endpoint}, and {owner}: "
                          "this one does not start (stop that one first, or give this "
                          "one a storage and endpoints of its own)")
    _say(f"{owner}, and no capflow server answers at {endpoint}: waiting up to "
         f"{wait_s:g} s for it to let go (a server that is stopping does)")
    deadline = time.monotonic() + wait_s
    while not stop.wait(0.2):
        owner = storage_owner(cfg)
        if owner is None:
            return True
        if time.monotonic() > deadline:
            raise Unavailable(f"{owner}, and it did not let go in {wait_s:g} s: stop it "
                              "first, or give this server a storage of its own ([storage] "
                              "url)")
    return False


def serve(cfg: Config) -> int:
    """Serve until SIGINT or SIGTERM, then stop in reverse: stop taking requests, finish
    in-flight ones, flush storage, stop the actors. If the gateway's watchdog finds its
    socket thread dead or stalled, stop the same way and return 1: a process that keeps
    its ports open without answering is worse than one that is gone (and restarted by
    its supervisor). Interrupted before it serves: exit status 130."""
    from capflow.actors.system import System
    from capflow.protocol.server import Server

    stop = threading.Event()
    failures: list[str] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def failed(reason: str) -> None:  # the gateway's watchdog: it no longer serves
        failures.append(reason)
        stop.set()

    if not wait_for_storage(cfg, stop):
        _say("interrupted before it started: nothing was started")
        return 130
    system = System(cfg, lock_wait_s=LOCK_WAIT_S).start()
    try:
        server = Server(system, on_failure=failed).start()
    except BaseException:
        system.stop()
        raise
    if stop.is_set():
        logger.warning("interrupted during the start: stopping")
    else:
        logger.info("capflow is running ({}); SIGINT or SIGTERM stops it", cfg.environment)
    try:
        stop.wait()
    finally:
        if failures:
            logger.critical("capflow stops because its gateway failed: {}", failures[0])
            _exit_if_stuck(cfg.server.drain_timeout_s + 30.0)
        logger.info("stopping: finishing in-flight requests, then flushing storage")
        server.stop()
        system.stop()
    return 1 if failures else 0


def _exit_if_stuck(seconds: float) -> None:
    """After a failure, an orderly stop may hang on what failed: end the process anyway
    (exit status 1) if it has not ended in `seconds`."""
    import os

    def hard_exit() -> None:
        logger.critical("capflow did not stop in {:g} s; exiting now", seconds)
        os._exit(1)

    timer = threading.Timer(seconds, hard_exit)
    timer.daemon = True
    timer.start()
