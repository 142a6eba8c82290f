"""`capflow events`: print a running server's event stream, one line per event
(``<topic> <body as JSON>``).

A SUB socket hears nothing of a server that is not there, so before it waits the command
makes sure there is one: it asks the server's request endpoint `system.health`
(capflow.protocol.probe; the configured `[server] endpoint`, or ``--request-endpoint``;
not when ``--endpoint`` alone names the events endpoint of some server), then waits for
the SUB socket's ZeroMQ handshake with the events endpoint, the only sign of life a
publisher gives. Nothing answering, nothing accepting connections at the events
endpoint, a refused CURVE handshake: it says so and exits with status 1. When it cannot
tell (no sign either way in time), it says that and waits all the same.

What it is connected to and what it waits for go to stderr, and so does a connection
that drops and comes back (the events published meanwhile are lost: PUB / SUB keeps
nothing for a subscriber that is away); the events go to `out`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

import msgpack
import zmq

from capflow.protocol.client import connect
from capflow.protocol.probe import PROBE_TIMEOUT_S, NoServer, Watch, probe, socket_for, why


def _say(text: str) -> None:
    print(f"capflow: {text}", file=sys.stderr, flush=True)


def command(cfg, args: argparse.Namespace, *, curve, out: TextIO) -> int:
    """0 after --count events or Ctrl-C; `NoServer` when nothing usable is there."""
    endpoint = args.endpoint or cfg.server.events_endpoint
    asked = getattr(args, "request_endpoint", None) or (
        None if args.endpoint else cfg.server.endpoint)
    if asked:
        probe(asked, curve)
    ctx = zmq.Context()
    sock = socket_for(ctx, zmq.SUB, curve)
    watch = Watch(sock)
    try:
        connect(sock, endpoint)
        for topic in args.topics or [""]:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        if watch.wait_handshake(PROBE_TIMEOUT_S, curve is not None):
            seen = "connected to"
        elif watch.failed is not None or watch.connected:
            raise why(endpoint, watch, curve is not None, role="events")
        elif watch.refused and asked:
            raise NoServer(endpoint, f"the capflow server at {asked} answers, but nothing "
                           f"accepts connections at {endpoint}: is that its [server] "
                           "events_endpoint? (see --endpoint)")
        elif watch.refused:
            raise why(endpoint, watch, curve is not None, role="events")
        else:
            seen = "cannot tell yet whether anything publishes at"
        server = (f"; the server at {asked} answers" if asked
                  else "; no request endpoint asked (see --request-endpoint)")
        what = ("every event" if not args.topics
                else "the events of topics starting with " + ", ".join(args.topics))
        until = f"{args.count} of them" if args.count else "Ctrl-C"
        _say(f"{seen} {endpoint}{server}. Waiting for {what}, until {until}; only events "
             "published from now on arrive")
        return _stream(sock, watch, endpoint, args.count, out)
    except KeyboardInterrupt:
        return 0
    finally:
        watch.close()
        sock.close(0)
        ctx.term()


def _stream(sock: zmq.Socket, watch: Watch, endpoint: str, count: int, out: TextIO) -> int:
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(watch.monitor, zmq.POLLIN)
    seen = 0
    while not count or seen < count:
        ready = dict(poller.poll())
        if watch.monitor in ready:
            was = watch.handshake and not watch.dropped
            events = watch.read()
            if was and zmq.EVENT_DISCONNECTED in events:
                _say(f"lost the connection to {endpoint}; reconnecting (events published "
                     "meanwhile are lost)")
            elif not was and zmq.EVENT_HANDSHAKE_SUCCEEDED in events:
                _say(f"connected to {endpoint}")
        if sock in ready:
            topic, body = sock.recv_multipart()
            print(f"{topic.decode()} {json.dumps(msgpack.unpackb(body, raw=False))}",
                  file=out, flush=True)
            seen += 1
    return 0
