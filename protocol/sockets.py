"""The gateway's sockets: the ROUTER for requests and the PUB for events, set up for
plain mode or CURVE and bound to the configured endpoints (protocol/server.py owns them
once they are open)."""

from __future__ import annotations

import ipaddress

import zmq
from loguru import logger

from capflow.actors.model.settings import ConfigError
from capflow.protocol.auth import Authorizer
from capflow.protocol.config import ServerConfig
from capflow.protocol.connections import Connections
from capflow.protocol.events import Publisher


def open_sockets(scfg: ServerConfig, authorizer: Authorizer | None
                 ) -> tuple[zmq.Context, zmq.Socket, Publisher, Connections | None]:
    """A new context, its ROUTER, the event `Publisher` and (under CURVE) the connection
    tracker, bound; when a bind fails everything opened is closed again and the
    `ConfigError` names the setting and the cause."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    events = Publisher(ctx, authorizer)
    pub = events.sock
    for sock in (router, pub):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100_000)
    router.setsockopt(zmq.RCVHWM, 100_000)
    router.setsockopt(zmq.MAXMSGSIZE, scfg.max_request_bytes)
    conns = None
    if authorizer is not None:
        # a client is its key, not its routing id: no connection may take another's
        # routing id (and its answers) over; heartbeats close vanished peers' ones
        authorizer.secure(ctx, router, pub)
        if scfg.heartbeat_ivl_s > 0:
            for sock in (router, pub):
                sock.setsockopt(zmq.HEARTBEAT_IVL, int(scfg.heartbeat_ivl_s * 1000))
                sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(scfg.heartbeat_timeout_s * 1000))
                sock.setsockopt(zmq.HEARTBEAT_TTL, int(scfg.heartbeat_timeout_s * 1000))
        conns = Connections(ctx, router)
    else:
        # without authentication a client is its routing id: a reconnecting client
        # takes its old connection's id over
        router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        for ep in (scfg.endpoint, scfg.events_endpoint):
            if not is_local(ep):
                logger.warning("plain mode on {}: no authentication and no encryption;"
                               " set security.curve = true to expose capflow", ep)
    for sock, name in ((router, "endpoint"), (pub, "events_endpoint")):
        endpoint = getattr(scfg, name)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            if authorizer is not None:
                authorizer.stop()
            if conns is not None:
                conns.close()
            for opened in (router, pub):
                opened.close(0)
            ctx.term()
            raise ConfigError(f"[server] {name} = {endpoint!r}: cannot listen there: "
                              f"{exc.strerror or exc}") from None
    return ctx, router, events, conns


def is_local(endpoint: str) -> bool:
    """Whether a ZeroMQ endpoint is reachable from this machine only."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = endpoint.partition("://")[2].rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # an interface name or a host name: assume it is reachable
        return False
