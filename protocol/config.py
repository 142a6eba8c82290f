"""The `[server]` and `[security]` sections: the gateway's sockets, limits and
CURVE keys."""

from __future__ import annotations

from typing import Annotated

import msgspec


class ServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: the ROUTER socket bots connect to (REQ or DEALER)
    endpoint: str = "tcp://127.0.0.1:7100"
    #: the PUB socket of the event stream
    events_endpoint: str = "tcp://127.0.0.1:7101"
    #: larger frames are refused by the socket (ZMQ_MAXMSGSIZE), never buffered
    max_request_bytes: int = 1 << 20
    #: a request not finished in this time is answered TIMEOUT (the outcome is unknown:
    #: the client retries with the same id and gets the real answer)
    request_timeout_s: float = 10.0
    #: answers kept for repeated request ids (per client), at least this long (the
    #: contract promises at least 10 minutes), within the budgets below
    dedup_ttl_s: Annotated[float, msgspec.Meta(ge=600)] = 600.0
    #: at most this many answers (the oldest go first past it)
    dedup_max: Annotated[int, msgspec.Meta(ge=1)] = 500_000
    #: and at most this many bytes of answers in all (the oldest go first past it): the
    #: 10-minute promise holds within this budget
    dedup_max_bytes: Annotated[int, msgspec.Meta(ge=1 << 20)] = 64 << 20
    #: one client's share of those bytes (past it, that client's oldest go first), so
    #: that one client cannot push out everyone else's answers
    dedup_client_max_bytes: Annotated[int, msgspec.Meta(ge=1 << 16)] = 16 << 20
    #: requests per second per client (token bucket, burst = 2 s worth); 0 = no limit
    rate_limit_per_s: float = 0.0
    #: on SIGTERM / SIGINT, how long in-flight requests may take to finish
    drain_timeout_s: float = 10.0
    #: threads for the few ops that do blocking work (profile.create, profile.list)
    workers: int = 2
    #: the socket thread stamps a heartbeat every turn of its loop (at least 5 times a
    #: second); dead, or no turn for this long: the gateway has failed (`capflow serve`
    #: stops with exit status 1)
    watchdog_stall_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    #: CURVE only: ZMTP heartbeats on the sockets, so that connections of peers that
    #: vanished are closed after `heartbeat_timeout_s` (0: off)
    heartbeat_ivl_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 5.0
    heartbeat_timeout_s: Annotated[float, msgspec.Meta(ge=0, le=6553)] = 15.0

    def __post_init__(self) -> None:
        if self.dedup_client_max_bytes > self.dedup_max_bytes:
            raise ValueError("[server] dedup_client_max_bytes is above dedup_max_bytes")
        if self.heartbeat_ivl_s > 0 and self.heartbeat_timeout_s < self.heartbeat_ivl_s:
            raise ValueError("[server] heartbeat_timeout_s is below heartbeat_ivl_s")
        if self.endpoint == self.events_endpoint and not self.endpoint.endswith(":*"):
            raise ValueError(f"[server] events_endpoint is endpoint ({self.endpoint}): the "
                             "event stream needs an endpoint of its own")


class SecurityConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: CURVE encryption and authentication of clients (see `capflow keys generate`)
    curve: bool = False
    #: holds server.key_secret and clients.toml (client public keys -> their profiles)
    keys_dir: str = "keys"
