"""Whether a capflow server answers at an endpoint: a quick look before a command waits
on one.

`probe` sends one `system.health` (no retries) and waits at most `timeout_s`, watching
the connection meanwhile through a ZeroMQ socket monitor, so that when no answer comes
it can say why:

- nothing accepts connections there: ``no capflow server answers at ... (is it running?
  see --endpoint)``;
- something accepts connections but is no request socket (the events endpoint, ...);
- the CURVE handshake failed: a CURVE server and no keys, keys for a plain server, the
  wrong server key, or a client key the server does not list;
- the handshake succeeded but no answer came in time: a server is there, busy or
  stalled, not gone. `probe` then returns None and the caller goes on with its own
  timeouts and retries (a slow server is not a dead one).

`Watch` is the monitor itself, for a SUB socket too (the events endpoint), where nothing
answers a request and the handshake is the only sign of life.
"""

from __future__ import annotations

import time
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from capflow.protocol.client import connect, decode_reply, new_routing_id, request_bytes

#: how long a command waits for `system.health` before it says that no server answers
PROBE_TIMEOUT_S = 1.0

_WATCHED = (zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_DISCONNECTED
            | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
           zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class NoServer(Exception):
    """No capflow server can be used at `endpoint`; the message says what was seen and
    what to try. `present`: something there took part in a ZeroMQ handshake that failed
    (a server under CURVE, most likely), so the storage is no way around it either."""

    def __init__(self, endpoint: str, message: str, *, present: bool = False):
        super().__init__(message)
        self.endpoint = endpoint
        self.present = present


class Watch:
    """What a socket monitor saw of one connecting socket: connected, handshake done,
    a handshake refused, connection refused, dropped. `read()` takes what is new."""

    def __init__(self, sock: zmq.Socket):
        self.sock = sock
        self.monitor = sock.get_monitor_socket(_WATCHED)
        self.connected = self.handshake = self.refused = self.dropped = False
        self.failed: int | None = None  # the last handshake failure's event
        self.failed_value: int | None = None  # and its value (errno or protocol error)

    def read(self, timeout_ms: int = 0) -> list[int]:
        """The events that arrived (waiting at most `timeout_ms` for the first)."""
        seen: list[int] = []
        while self.monitor.poll(timeout_ms if not seen else 0):
            message = recv_monitor_message(self.monitor)
            event = int(message["event"])
            seen.append(event)
            if event == zmq.EVENT_CONNECTED:
                self.connected = True
            elif event == zmq.EVENT_CONNECT_RETRIED:
                self.refused = not self.connected
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshake, self.failed, self.dropped = True, None, False
                self.failed_value = None
            elif event in _FAILED and not (event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                                           and self.failed is not None):
                # a failure with no detail (the peer closed) says less than one before it
                self.failed, self.failed_value = event, int(message["value"])
            elif event == zmq.EVENT_DISCONNECTED:
                self.dropped = True
        return seen

    def decided(self, curve: bool) -> bool:
        """Whether a handshake failure says what is there. A peer that closed the
        connection during the handshake (no detail, or only a disconnect) may be a CURVE
        server dropping a plain client or a socket of another kind (the events PUB): the
        reconnect that follows, if any, tells them apart."""
        if self.failed in (zmq.EVENT_HANDSHAKE_FAILED_AUTH,
                           zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
            return True
        return self.failed is not None and curve

    def wait_handshake(self, timeout_s: float, curve: bool = False) -> bool:
        """Wait for a handshake (True) or a refusal of it that says what is there
        (`decided`: False), at most `timeout_s`; False also when the time ran out."""
        deadline = time.monotonic() + timeout_s
        while not self.handshake and not self.decided(curve):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.read(max(1, int(left * 1000)))
        return self.handshake

    def close(self) -> None:
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(0)


def why(endpoint: str, seen: Watch, curve: bool, *, role: str = "request") -> NoServer:
    """Why nothing usable answers at `endpoint`, from what the monitor saw. `role`:
    ``request`` (a capflow server's requests) or ``events`` (its event stream)."""
    if seen.failed == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return NoServer(endpoint, f"the capflow server at {endpoint} refused this client's "
                        "CURVE key (is its public key listed in the server's clients.toml?)",
                        present=True)
    mismatch = (seen.failed == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                and seen.failed_value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
    if mismatch and not curve:
        return NoServer(endpoint, f"the server at {endpoint} uses CURVE (security.curve = "
                        "true): give --server-key and --client-key", present=True)
    if mismatch:
        return NoServer(endpoint, f"the server at {endpoint} does not take these CURVE keys: "
                        "does it run in plain mode (security.curve = false)? Then leave out "
                        "--server-key and --client-key", present=True)
    if seen.failed == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and curve:
        # a CURVE server drops a client whose server key is wrong without a word
        return NoServer(endpoint, f"the CURVE handshake with {endpoint} failed: is "
                        "--server-key that server's public key (its server.key)?",
                        present=True)
    # anything else (a peer that closed mid-handshake, a socket type that does not go
    # with a request socket) is no sign of CURVE: only a mechanism mismatch is
    if (seen.connected or seen.failed is not None) and not seen.handshake:
        other = "the events endpoint" if role == "request" else "a request endpoint"
        return NoServer(endpoint, f"something at {endpoint} accepts connections but is not "
                        f"a capflow {role} endpoint (is it {other}? see --endpoint)")
    if role == "events":
        return NoServer(endpoint, f"nothing publishes capflow events at {endpoint} (is a "
                        "server running, with this events_endpoint? see --endpoint)")
    return NoServer(endpoint, f"no capflow server answers at {endpoint} (is it running? see "
                    "--endpoint)")


def socket_for(ctx: zmq.Context, kind: int, curve=None) -> zmq.Socket:
    """A client socket of `kind`, not yet connected: no linger, the CURVE keys if any (in
    plain mode a routing id of its own, as `capflow.protocol.client` makes them)."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        curve.apply(sock)
    elif kind == zmq.DEALER:
        sock.setsockopt(zmq.ROUTING_ID, new_routing_id())
    return sock


def probe(endpoint: str, curve=None, timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Any] | None:
    """One `system.health`, no retries: the answer's result ({} for an error answer: a
    server is there all the same), or None when a server took the connection (the
    handshake succeeded) but did not answer within `timeout_s`. Raises `NoServer` when
    nothing usable is there. `curve`: the `CurveKeys` the real request will use."""
    ctx = zmq.Context()
    sock = socket_for(ctx, zmq.DEALER, curve)
    watch = Watch(sock)
    try:
        connect(sock, endpoint)
        req_id, data = request_bytes("system.health", {})
        # a DEALER whose peer dropped the connection during the handshake has no pipe to
        # send on: unbounded, that send would wait for ever
        sock.setsockopt(zmq.SNDTIMEO, max(1, int(timeout_s * 1000)))
        try:
            sock.send_multipart([b"", data])
        except zmq.Again:
            watch.read()
            raise why(endpoint, watch, curve is not None) from None
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(watch.monitor, zmq.POLLIN)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            ready = dict(poller.poll(max(1, int(left * 1000))))
            if watch.monitor in ready:
                watch.read()
                if watch.decided(curve is not None):
                    break  # a handshake refused: waiting changes nothing
            if sock in ready:
                reply = decode_reply(sock.recv_multipart()[-1])
                if reply.get("id") in (req_id, None):
                    return (reply.get("result") or {}) if reply.get("ok") else {}
        watch.read()
        if watch.handshake and watch.failed is None:
            return None  # there, but slow: the caller's own timeouts decide
        raise why(endpoint, watch, curve is not None)
    finally:
        watch.close()
        sock.close(0)
        ctx.term()
