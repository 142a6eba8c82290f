"""Python clients of the v1 wire contract.

`Client` is synchronous (a REQ socket, the Lazy Pirate pattern): on timeout it closes
and reopens the socket and resends the *same bytes with the same id*, so the server
answers a retry from its cache instead of executing twice (it knows the client by its
CURVE key, or in plain mode by the routing id the client keeps); after `retries` it raises
`ClientTimeout`. `AsyncClient` is a DEALER with many requests in flight.

    with Client("tcp://127.0.0.1:7100") as c:
        c.profile_create("alpha", "10000")
        r = c.allocation_reserve("alpha", "BTCUSDT", "2500", client_request_id="k-1")
        c.allocation_release("alpha", r["reservation_id"])

Errors come back as `ClientError` with the contract's `code`, `message` and `details`.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import msgpack
import zmq
import zmq.asyncio

from capflow.protocol.codec import VERSION, pack


class ClientError(Exception):
    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None,
                 req_id: str | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}
        self.req_id = req_id


class ClientTimeout(ClientError):
    def __init__(self, op: str, attempts: int, timeout_s: float, endpoint: str | None = None):
        where = f" from {endpoint}" if endpoint else ""
        super().__init__("TIMEOUT", f"{op}: no answer{where} after {attempts} attempts of "
                         f"{timeout_s:g} s; the outcome is unknown", {"op": op})
        self.endpoint = endpoint


class CurveKeys:
    """A client's key pair and the server's public key (z85 bytes)."""

    def __init__(self, server_public: bytes, public: bytes, secret: bytes):
        self.server_public, self.public, self.secret = server_public, public, secret

    @classmethod
    def load(cls, server_key_file: str, client_secret_file: str) -> CurveKeys:
        import zmq.auth

        server_public, _ = zmq.auth.load_certificate(server_key_file)
        public, secret = zmq.auth.load_certificate(client_secret_file)
        return cls(server_public, public, secret)

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


def request_bytes(op: str, args: dict[str, Any], req_id: str | None = None) -> tuple[str,
                                                                                     bytes]:
    req_id = req_id or uuid.uuid4().hex
    return req_id, pack({"v": VERSION, "id": req_id, "op": op, "args": args})


def _result(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("ok"):
        return reply["result"]
    err = reply.get("error") or {}
    raise ClientError(err.get("code", "INTERNAL"), err.get("message", ""),
                      err.get("details"), reply.get("id"))


def decode_reply(data: bytes) -> dict[str, Any]:
    try:
        reply = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise ClientError("BAD_REQUEST", f"the server's answer is not msgpack: {exc}") from None
    if not isinstance(reply, dict):
        raise ClientError("BAD_REQUEST", "the server's answer is not a map")
    return reply


def new_routing_id() -> bytes:
    return b"c" + os.urandom(15)  # never starts with a zero byte (reserved by ZeroMQ)


def connect(sock: zmq.Socket, endpoint: str) -> None:
    """`sock.connect(endpoint)`; an endpoint ZeroMQ cannot connect to (no ``tcp://``, no
    port, ``http://``...) is an INVALID_ARGUMENT that says what one looks like."""
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close(0)
        raise ClientError("INVALID_ARGUMENT", f"{endpoint!r} is not an endpoint to connect "
                          f"to ({exc.strerror or exc}): write tcp://HOST:PORT, e.g. "
                          "tcp://127.0.0.1:7100", {"field": "endpoint"}) from None


def _connect(ctx, kind: int, endpoint: str, routing_id: bytes,
             curve: CurveKeys | None) -> zmq.Socket:
    """A client socket: no linger; with CURVE keys, no routing id of its own (the server
    knows the client by its key and names each connection itself); in plain mode a
    stable routing id, so that the server's reply cache recognizes a reconnecting
    client."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if curve:
        curve.apply(sock)
    else:
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
    connect(sock, endpoint)
    return sock


def _args(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


class _Ops:
    """Typed methods for every op, on top of the subclass's `call(op, **args)` (sync in
    Client, async in AsyncClient)."""

    call: Any

    def health(self):
        return self.call("system.health")

    def system_metrics(self):
        """Requests per op since the server started: counts, error codes, latencies."""
        return self.call("system.metrics")

    def profile_create(self, profile_id: str, allocated, *, risk_profile: str | None = None,
                       account_id: str | None = None, currency: str | None = None):
        return self.call("profile.create", **_args(
            profile_id=profile_id, allocated=allocated, risk_profile=risk_profile,
            account_id=account_id, currency=currency))

    def profile_get(self, profile_id: str):
        return self.call("profile.get", profile_id=profile_id)

    def profile_list(self, *, limit: int | None = None, cursor: str | None = None):
        return self.call("profile.list", **_args(limit=limit, cursor=cursor))

    def profile_set_state(self, profile_id: str, state: str, reason: str | None = None):
        return self.call("profile.set_state", **_args(profile_id=profile_id, state=state,
                                                      reason=reason))

    def ledger_get(self, profile_id: str):
        return self.call("ledger.get", profile_id=profile_id)

    def ledger_deposit(self, profile_id: str, amount, client_request_id: str | None = None):
        return self.call("ledger.deposit", profile_id=profile_id, amount=amount,
                         client_request_id=client_request_id or uuid.uuid4().hex)

    def ledger_withdraw(self, profile_id: str, amount, client_request_id: str | None = None):
        return self.call("ledger.withdraw", profile_id=profile_id, amount=amount,
                         client_request_id=client_request_id or uuid.uuid4().hex)

    def allocation_reserve(self, profile_id: str, symbol: str, amount,
                           client_request_id: str | None = None, ttl_s: int | None = None):
        return self.call("allocation.reserve", **_args(
            profile_id=profile_id, symbol=symbol, amount=amount, ttl_s=ttl_s,
            client_request_id=client_request_id or uuid.uuid4().hex))

    def allocation_release(self, profile_id: str, reservation_id: str,
                           reason: str | None = None):
        return self.call("allocation.release", **_args(
            profile_id=profile_id, reservation_id=reservation_id, reason=reason))

    def risk_check(self, profile_id: str, symbol: str, side: str, **signal):
        """What-if: every pre-trade check of a signal like this one (price, qty or
        notional, tp_pct, sl_pct); nothing changes."""
        return self.call("risk.check", **_args(profile_id=profile_id, symbol=symbol,
                                                side=side, **signal))

    def risk_reset(self, profile_id: str, breakers: list[str] | None = None,
                   reason: str | None = None):
        return self.call("risk.reset", **_args(profile_id=profile_id, breakers=breakers,
                                                reason=reason))

    def system_set_state(self, state: str, reason: str | None = None):
        """The global kill switch: HALTED, REDUCE_ONLY or ACTIVE for every profile."""
        return self.call("system.set_state", **_args(state=state, reason=reason))

    def account_get(self, account_id: str):
        """A broker account: mode, connection, venue balances, last reconcile, data age."""
        return self.call("account.get", account_id=account_id)

    def account_reconcile(self, account_id: str):
        """Reconcile a live account with its venue now; the report."""
        return self.call("account.reconcile", account_id=account_id)


class Client(_Ops):
    def __init__(self, endpoint: str = "tcp://127.0.0.1:7100", *, timeout_s: float = 5.0,
                 retries: int = 3, curve: CurveKeys | None = None):
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.retries = retries
        self.curve = curve
        self.routing_id = new_routing_id()
        self.ctx = zmq.Context()
        self.attempts = 0
        self._sock: zmq.Socket | None = None

    def _open(self) -> zmq.Socket:
        sock = _connect(self.ctx, zmq.REQ, self.endpoint, self.routing_id, self.curve)
        sock.setsockopt(zmq.SNDTIMEO, max(1, int(self.timeout_s * 1000)))
        return sock

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        req_id, data = request_bytes(op, args)
        return _result(self.send_raw(data, req_id, op))

    def send_raw(self, data: bytes, req_id: str | None = None, op: str = "?") -> dict:
        """Send one encoded request with Lazy Pirate retries; the decoded reply map."""
        for _attempt in range(self.retries + 1):
            self.attempts += 1
            if self._sock is None:
                self._sock = self._open()
            try:
                self._sock.send(data)  # bounded by SNDTIMEO: a socket with no peer waits
            except zmq.Again:
                pass  # no peer took it in time: an attempt without an answer
            else:
                if self._sock.poll(int(self.timeout_s * 1000), zmq.POLLIN):
                    reply = decode_reply(self._sock.recv())
                    if req_id is None or reply.get("id") in (req_id, None):
                        return reply
            # no answer (or a stale one): the REQ socket is stuck; start afresh
            self._sock.close(0)
            self._sock = None
        raise ClientTimeout(op, self.retries + 1, self.timeout_s, self.endpoint)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        self.ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Ops):
    """DEALER client: many requests in flight; each retried with the same bytes."""

    def __init__(self, endpoint: str = "tcp://127.0.0.1:7100", *, timeout_s: float = 5.0,
                 retries: int = 3, curve: CurveKeys | None = None):
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.retries = retries
        self.ctx = zmq.asyncio.Context()
        self.sock = _connect(self.ctx, zmq.DEALER, endpoint, new_routing_id(), curve)
        self._waiting: dict[str, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None

    async def _read(self) -> None:
        while True:
            frames = await self.sock.recv_multipart()
            try:
                reply = msgpack.unpackb(frames[-1], raw=False)
            except Exception:
                continue
            fut = self._waiting.get(reply.get("id")) if isinstance(reply, dict) else None
            if fut is not None and not fut.done():
                fut.set_result(reply)

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        req_id, data = request_bytes(op, args)
        return _result(await self.send_raw(data, req_id, op))

    async def send_raw(self, data: bytes, req_id: str, op: str = "?") -> dict:
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._read())
        fut = asyncio.get_running_loop().create_future()
        self._waiting[req_id] = fut
        try:
            for _attempt in range(self.retries + 1):
                try:  # a DEALER with no peer would wait for one without bound
                    await asyncio.wait_for(self.sock.send_multipart([b"", data]),
                                           self.timeout_s)
                except TimeoutError:
                    continue
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), self.timeout_s)
                except TimeoutError:
                    continue
            raise ClientTimeout(op, self.retries + 1, self.timeout_s, self.endpoint)
        finally:
            self._waiting.pop(req_id, None)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        self.sock.close(0)
        self.ctx.term()
