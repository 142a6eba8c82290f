"""Under CURVE: which connection each request came in on, and whether it is still open.

A ROUTER addresses its peers by routing id, which each peer chooses for itself. With
CURVE, a listed key could otherwise connect with another key's routing id once that key's
connection has gone, and receive the answers still on their way to it. So the gateway
sends an answer only on the connection its request came in on: each request carries a
token (the connection's file descriptor, from the frame's metadata, and that descriptor's
generation, from the ROUTER's monitor events), and an answer whose connection has closed
since is not sent: it stays in the reply cache for the client's retry, which comes on its
new connection.

Events and messages arrive in a safe order: libzmq reports a connection as accepted
before any of its messages can be read, and as disconnected before its descriptor is
closed (so before the number can be reused).
"""

from __future__ import annotations

import struct

import zmq
from loguru import logger

#: a request's connection: (file descriptor, generation), or None if already closed
Token = tuple[int, int] | None
UNCHECKED = (-1, -1)  # not known: the answer goes by routing id alone

_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED


class Connections:
    def __init__(self, ctx: zmq.Context, router: zmq.Socket):
        address = f"inproc://capflow-router-monitor-{id(self):x}"
        router.monitor(address, _EVENTS)
        self._router = router
        self.monitor = ctx.socket(zmq.PAIR)
        self.monitor.setsockopt(zmq.LINGER, 0)
        # libzmq's I/O thread waits when this queue is full: keep it roomy
        self.monitor.setsockopt(zmq.RCVHWM, 1_000_000)
        self.monitor.connect(address)
        self._open: dict[int, int] = {}  # fd -> generation, while open
        self._generation = 0
        self._unchecked = False

    def drain(self) -> None:
        """Read every monitor event waiting."""
        while True:
            try:
                head, _ = self.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            event, fd = struct.unpack("=HI", head[:6])
            if event == zmq.EVENT_ACCEPTED:
                self._generation += 1
                self._open[fd] = self._generation
            elif event == zmq.EVENT_DISCONNECTED:
                self._open.pop(fd, None)

    def token(self, frame: zmq.Frame) -> Token:
        """The connection a received frame came in on."""
        try:
            fd = frame.get(zmq.SRCFD)
        except zmq.ZMQError:  # a libzmq without it (deprecated, but in 4.3): no check
            if not self._unchecked:
                logger.warning("this libzmq does not tell the connection of a message; "
                               "answers are sent by routing id alone")
            self._unchecked = True
            return UNCHECKED
        generation = self._open.get(fd)
        if generation is None:  # accepted after the last drain
            self.drain()
            generation = self._open.get(fd)
        return None if generation is None else (fd, generation)

    def is_open(self, token: Token) -> bool:
        if token is UNCHECKED:
            return True
        return token is not None and self._open.get(token[0]) == token[1]

    def close(self) -> None:
        try:
            self._router.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(0)
