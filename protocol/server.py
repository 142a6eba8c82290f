"""The ZeroMQ gateway: one thread owns the ROUTER and PUB sockets and never blocks.

After each poll it drains every ready request, decodes and validates it, and hands it
to an op handler, which sends commands to the ledger actors with callbacks. Whatever
thread finishes a request encodes the answer and queues it with an `eventfd` poke; the
socket thread sends it. So one slow profile never stalls the others, and the socket is
only ever touched by its own thread.

Per request: exactly one answer. Repeated ids (per client identity, or per CURVE key)
are answered from a cache (kept `dedup_ttl_s`, at least 10 minutes, within its byte
budgets: protocol/replycache.py) without executing twice; a repeat that arrives while
the first is still running waits for the same answer. A request not finished in
`request_timeout_s` is answered `TIMEOUT`; its real answer is still cached for the
client's retry.

In plain mode a client is its routing id, and a reconnecting client takes its id over
(`ZMQ_ROUTER_HANDOVER`). Under CURVE a client is its key: no connection takes over
another's routing id, ZMTP heartbeats close the connections of vanished peers, and an
answer that waited goes back only on the connection its request came in on
(protocol/connections.py), never to whichever connection holds that routing id now.

The socket thread survives anything a peer does: each turn of its loop is guarded (a
failure is logged and the loop goes on). A watchdog (protocol/watchdog.py) checks that
the thread is alive and still turning; when it is not, the gateway has failed: `failure`
says why, it is logged at CRITICAL, `system.health` (if it can still be answered) says
`failed`, and `on_failure` is called (`capflow serve` then stops with exit status 1).

Metrics (the `system.metrics` op, protocol/metrics.py) belong to the socket thread
alone, so they need no lock: every admitted request is timed from admission to its
answer, per op. A `TIMEOUT` answer is recorded as an outcome of its op (at the time it
was sent), and the real answer, when it comes, is recorded as another: `count` counts
outcomes, so a request that timed out counts twice. Repeats answered from the cache,
and requests refused before admission (`BAD_REQUEST`, `UNSUPPORTED_VERSION`,
`RATE_LIMITED`, `UNAVAILABLE` at shutdown), are only counted.
"""

from __future__ import annotations

import heapq
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from queue import Empty, SimpleQueue
from typing import Any

import zmq
from loguru import logger

from capflow.actors.config import Config
from capflow.protocol.auth import Authorizer
from capflow.protocol.codec import WireError, decode, error_reply, ok_reply
from capflow.protocol.connections import Connections, Token
from capflow.protocol.events import event_frames
from capflow.protocol.metrics import (
    BUCKET_BASE_US,
    BUCKET_FACTOR,
    UNKNOWN_OP,
    OpStats,
    register_gateway,
)
from capflow.protocol.opkit import Caller, OpContext
from capflow.protocol.ops import OPS, dispatch
from capflow.protocol.ratelimit import RateLimiter
from capflow.protocol.replycache import ReplyCache
from capflow.protocol.sockets import open_sockets
from capflow.protocol.system_ops import health
from capflow.protocol.trail_events import TrailThrottle
from capflow.protocol.watchdog import Watchdog

PLAIN_CALLER = Caller("wire")
#: most requests taken per turn of the loop before the answers ready are sent
MAX_BATCH = 4096
#: most copies of one request (resent with its id while it runs) that wait for its
#: answer; past it the oldest is answered TIMEOUT at once (retry with the same id)
MAX_WAITING = 16
INFINITY = float("inf")


#: a copy of a request waiting for its answer: its route, and under CURVE its connection
_Waiting = tuple[list[bytes], Token]


class _Pending:
    __slots__ = ("deadline", "op", "routes", "started", "timed_out")

    def __init__(self, waiting: _Waiting, started: float, deadline: float, op: str):
        self.routes = [waiting]
        self.started = started  # time.monotonic() at admission
        self.deadline = deadline
        self.op = op  # the metrics name
        self.timed_out = False


class Server:
    """The gateway. `on_failure(reason)` is called (once, from the watchdog's thread) if
    the socket thread dies or stalls; `failure` is then the reason (None while well)."""

    def __init__(self, system, config: Config | None = None, *,
                 on_failure: Callable[[str], None] | None = None):
        self.system = system
        self.config = config or system.config
        self.on_failure = on_failure
        self.failure: str | None = None
        self._watchdog: Watchdog | None = None
        self.started = time.monotonic()
        scfg = self.config.server
        self.timeout_s = scfg.request_timeout_s
        self.curve = self.config.security.curve
        self.authorizer: Authorizer | None = None
        self._conns: Connections | None = None  # under CURVE
        self._completions: SimpleQueue = SimpleQueue()
        self._pending: dict[tuple[bytes, str], _Pending] = {}
        self._deadlines: list[tuple[float, tuple[bytes, str]]] = []
        self.cache = ReplyCache(scfg.dedup_ttl_s, scfg.dedup_max, scfg.dedup_max_bytes,
                                scfg.dedup_client_max_bytes)
        self._limiter = RateLimiter(scfg.rate_limit_per_s)
        self._trails = TrailThrottle(self.config.oms.trail_event_interval_s)
        self._next_sweep = 0.0
        self._stopping = False
        self._woken = False
        self._running = False
        self._thread: threading.Thread | None = None
        self._thread_id = 0
        self._pool = ThreadPoolExecutor(max_workers=scfg.workers,
                                        thread_name_prefix="capflow-op")
        self._ops = OpContext(system, self._health, self._run_blocking, self._metrics)
        self._unsubscribe = None
        self.requests = 0
        # metrics: read and written by the socket thread only
        self._op_stats: dict[str, OpStats] = {}
        self._refused: dict[str, int] = {}
        self._deduplicated = 0
        self._gauges = None  # unregisters the gateway's metrics collector
        self.ctx: zmq.Context | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> Server:
        scfg = self.config.server
        if self.curve:
            self.authorizer = Authorizer.load(self.config.security.keys_dir)
        self.ctx, self.router, self.events, self._conns = open_sockets(
            scfg, self.authorizer)
        self.pub = self.events.sock
        self.endpoint = self.router.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.events_endpoint = self.pub.getsockopt(zmq.LAST_ENDPOINT).decode()
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._unsubscribe = self.system.bus.subscribe(self._on_events)
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="capflow-server", daemon=True)
        # under CURVE no connection gets in without the ZAP handler's thread
        also = {"CURVE authenticator": self.authorizer.thread} if self.curve else {}
        self._watchdog = Watchdog("capflow-server", self._thread, scfg.watchdog_stall_s,
                                  self._failed, also)
        self._thread.start()
        self._watchdog.start()
        self._gauges = register_gateway(self.system, self)
        logger.info("serving {} ({}), events on {}", self.endpoint,
                    "CURVE" if self.curve else "plain, no authentication", self.events_endpoint)
        return self

    def stop(self) -> None:
        """Stop taking requests (new ones get UNAVAILABLE), let in-flight ones finish
        (at most `drain_timeout_s`), then close the sockets."""
        if not self._running:
            return
        self._stopping = True
        deadline = time.monotonic() + self.config.server.drain_timeout_s
        while self._pending and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.01)
        if self._pending:
            logger.warning("{} requests still in flight at shutdown", len(self._pending))
        self._watchdog.stop()  # the socket thread ends now, on purpose
        self._running = False
        if self._gauges is not None:
            self._gauges()
        self._notify()
        self._thread.join(10)
        if self._unsubscribe:
            self._unsubscribe()
        self._pool.shutdown(wait=True, cancel_futures=False)
        if self.authorizer is not None:
            self.authorizer.stop()
        if self._conns is not None:
            self._conns.close()
        self.router.close(0)
        self.pub.close(0)
        self.ctx.term()
        os.close(self._efd)
        logger.info("server stopped after {} requests", self.requests)

    # -- called from other threads ----------------------------------------------------

    def _notify(self) -> None:
        """Wake the socket thread, unless a wake-up is already pending (it clears the flag
        before draining, so nothing queued after that can be missed)."""
        if self._woken:
            return
        self._woken = True
        try:
            os.eventfd_write(self._efd, 1)
        except OSError:  # closed during shutdown
            pass

    def _done_for(self, key: tuple[bytes, str], req_id: str):
        def done(result: Any = None, error: WireError | None = None) -> None:
            try:
                data = error_reply(req_id, error) if error is not None else ok_reply(
                    req_id, result)
            except Exception:
                logger.exception("cannot encode the answer to {}", req_id)
                error = WireError("INTERNAL", "cannot encode the answer")
                data = error_reply(req_id, error)
            code = None if error is None else error.code
            if threading.get_ident() == self._thread_id:
                self._complete(key, data, code)
            else:
                self._completions.put((key, data, code))
                self._notify()

        return done

    def _run_blocking(self, fn, done) -> None:
        def work():
            try:
                result = fn()
            except Exception as exc:
                if not isinstance(exc, WireError) and getattr(exc, "code", None) is None:
                    logger.exception("op failed")
                done(error=WireError.of(exc))
                return
            done(result)

        self._pool.submit(work)

    def _on_events(self, events) -> None:
        self._publish(self._trails.filter(events))

    def _publish(self, events) -> None:
        for topic, body in event_frames(events):
            self._completions.put((None, (topic, body), None))
        self._notify()

    def _failed(self, reason: str) -> None:
        """The watchdog found the socket thread dead or stalled."""
        self.failure = reason
        logger.critical("the gateway has failed: {}", reason)
        if self.on_failure is not None:
            try:
                self.on_failure(reason)
            except Exception:
                logger.exception("the gateway's on_failure callback failed")

    def _health(self) -> dict[str, Any]:
        info = health(self.system, self.started, self.config.environment, self.curve)
        if self.failure is not None:
            info["status"] = "failed"
        return info

    def _metrics(self) -> dict[str, Any]:
        """The `system.metrics` result; called on the socket thread (which owns them)."""
        return {"uptime_s": round(time.monotonic() - self.started, 3),
                "requests": self.requests, "refused": sum(self._refused.values()),
                "refused_codes": dict(self._refused), "deduplicated": self._deduplicated,
                # not counting the system.metrics request that asks
                "in_flight": max(0, len(self._pending) - 1),
                "cache": {"answers": len(self.cache), "bytes": self.cache.bytes,
                          "max_bytes": self.cache.max_bytes, "evicted": self.cache.evicted},
                "bucket_base_us": BUCKET_BASE_US, "bucket_factor": BUCKET_FACTOR,
                "ops": {op: stats.to_map() for op, stats in sorted(self._op_stats.items())}}

    def _refuse(self, code: str) -> None:
        self._refused[code] = self._refused.get(code, 0) + 1

    # -- the socket thread ------------------------------------------------------------

    def _loop(self) -> None:
        self._thread_id = threading.get_ident()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self._efd, zmq.POLLIN)
        if self.curve:
            poller.register(self.pub, zmq.POLLIN)
            poller.register(self._conns.monitor, zmq.POLLIN)
        try:
            while self._running:
                try:
                    self._turn(poller)
                except Exception:  # never let anything kill the socket thread
                    logger.exception("unexpected failure in the gateway's loop")
                    time.sleep(0.01)  # a failure that repeats must not spin
                    continue
                self._watchdog.beat()  # only a turn that went through counts
            self._drain_completions()
        except BaseException as exc:
            self._watchdog.died(repr(exc))
            logger.opt(exception=exc).critical("the gateway's socket thread died")
            raise

    def _turn(self, poller: zmq.Poller) -> None:
        """One turn of the loop: poll, take requests, send answers and events."""
        timeout = 200
        if self._deadlines:
            timeout = max(0, min(timeout, int((self._deadlines[0][0]
                                               - time.monotonic()) * 1000) + 1))
        try:
            ready = dict(poller.poll(timeout))
        except zmq.ZMQError:
            if not self._running:
                return
            raise
        router = self.router
        if self._conns is not None:
            self._conns.drain()
        if router in ready:
            for _ in range(MAX_BATCH):  # then answer, even while requests keep coming
                try:
                    # copying is cheaper for small frames; CURVE needs the Frame
                    # objects for their metadata
                    frames = router.recv_multipart(zmq.NOBLOCK, copy=not self.curve)
                except zmq.Again:
                    break
                try:
                    self._on_request(frames)
                except Exception:  # never let a request stop the others
                    logger.exception("unexpected failure handling a request")
        if self.pub in ready:
            self.events.on_subscriptions()
        if self._efd in ready:
            try:
                os.eventfd_read(self._efd)
            except BlockingIOError:
                pass
        self._woken = False
        if due := self._trails.due():
            self._publish(due)
        self._drain_completions()
        self._expire()

    def _send(self, route: list[bytes], data: bytes) -> None:
        try:
            self.router.send_multipart([*route, data], zmq.NOBLOCK)
        except zmq.ZMQError:  # peer gone or its queue full: the client will retry
            pass

    def _answer(self, waiting: _Waiting, data: bytes) -> None:
        """Send an answer to a request that waited for it: under CURVE only on the
        connection the request came in on (the answer stays in the cache otherwise)."""
        route, token = waiting
        if self._conns is None or self._conns.is_open(token):
            self._send(route, data)

    def _on_request(self, frames: list[zmq.Frame]) -> None:
        self.requests += 1
        payload = frames[-1]
        token: Token = None
        if self.curve:
            route = [f.bytes for f in frames[:-1]]
            try:
                client = payload.get("User-Id")
            except zmq.ZMQError:
                client = None
            token = self._conns.token(payload)
            payload = payload.bytes
            if not client:  # the handshake let no key through: answer, serve nothing
                self._refuse("UNAUTHENTICATED")
                self._send(route, error_reply(None, WireError(
                    "UNAUTHENTICATED", "the request carries no authenticated CURVE key")))
                return
        else:
            route, client = frames[:-1], None
        ckey = client.encode() if client else route[0]
        try:
            env = decode(payload)
        except WireError as err:
            self._refuse(err.code)
            self._send(route, error_reply(getattr(err, "req_id", None), err))
            return
        key = (ckey, env.id)
        cached = self.cache.get(key)
        if cached is not None:
            self._deduplicated += 1
            self._send(route, cached)
            return
        pending = self._pending.get(key)
        if pending is not None:  # a retry of a request still running: same answer
            self._deduplicated += 1
            if len(pending.routes) >= MAX_WAITING:  # the oldest copy stops waiting
                self._answer(pending.routes.pop(0), self._timeout_reply(env.id))
            pending.routes.append((route, token))
            if pending.timed_out and pending.deadline == INFINITY:  # once, not per copy
                pending.deadline = time.monotonic() + self.timeout_s
                heapq.heappush(self._deadlines, (pending.deadline, key))
            return
        if self._stopping:
            self._refuse("UNAVAILABLE")
            self._send(route, error_reply(env.id, WireError(
                "UNAVAILABLE", "the server is shutting down; retry later")))
            return
        if not self._limiter.admit(ckey, time.monotonic()):
            self._refuse("RATE_LIMITED")
            self._send(route, error_reply(env.id, WireError(
                "RATE_LIMITED", "too many requests; slow down",
                {"limit_per_s": self.config.server.rate_limit_per_s})))
            return
        caller = self.authorizer.caller(client) if self.authorizer else PLAIN_CALLER
        op = env.op
        now = time.monotonic()
        pending = _Pending((route, token), now, now + self.timeout_s,
                           op if op in OPS else UNKNOWN_OP)
        self._pending[key] = pending
        heapq.heappush(self._deadlines, (pending.deadline, key))
        done = self._done_for(key, env.id)
        try:
            dispatch(self._ops, op, env.args, caller, done)
        except WireError as err:
            done(error=err)
        except Exception as exc:
            if getattr(exc, "code", None) is None:
                logger.exception("op {} failed", op)
            done(error=WireError.of(exc))

    def _drain_completions(self) -> None:
        if self._conns is not None:
            self._conns.drain()  # so that no answer goes to a connection that closed
        while True:
            try:
                key, data, code = self._completions.get_nowait()
            except Empty:
                return
            if key is None:
                self.events.publish(*data)
            else:
                self._complete(key, data, code)

    def _complete(self, key: tuple[bytes, str], data: bytes, code: str | None) -> None:
        """Answer a finished request; `code` is its error code (None: ok)."""
        pending = self._pending.pop(key, None)
        now = time.monotonic()
        self.cache.put(key, data, now)
        if pending is not None:
            for waiting in pending.routes:
                self._answer(waiting, data)
            self._record(pending, code, now)

    def _expire(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0
            self.cache.expire(now)
            self._limiter.sweep(now)
        while self._deadlines and self._deadlines[0][0] <= now:
            _, key = heapq.heappop(self._deadlines)
            pending = self._pending.get(key)
            if pending is None or pending.deadline > now:
                continue
            data = self._timeout_reply(key[1])
            for waiting in pending.routes:
                self._answer(waiting, data)
            self._record(pending, "TIMEOUT", now)  # the real outcome is recorded too
            pending.routes = []  # keep waiting: the real answer goes to the cache
            pending.timed_out = True
            pending.deadline = INFINITY

    def _timeout_reply(self, req_id: str) -> bytes:
        return error_reply(req_id, WireError(
            "TIMEOUT", "not finished in time; the outcome is unknown: retry with the "
            "same id", {"timeout_s": self.timeout_s}))

    def _record(self, pending: _Pending, code: str | None, now: float) -> None:
        stats = self._op_stats.get(pending.op)
        if stats is None:
            stats = self._op_stats[pending.op] = OpStats()
        stats.add(code, now - pending.started)
