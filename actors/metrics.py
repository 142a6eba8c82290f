"""The metrics endpoint: Prometheus' text format over HTTP (``[metrics] listen``), served
by the official client library (`prometheus_client`) from a registry of this System's
own, so that two Systems in one process never share or collide on a metric.

Nothing is counted on the hot paths for it: its one collector (`SystemCollector`) reads,
at scrape time, what the System already shows other threads -- each account manager's
`AccountStatus` (connection, price freshness, last reconciliation, order latency, which
the venue worker records), the safety's degraded reasons (the alerts that stand), the
global trading state. It never asks an actor, so a scrape cannot wait on a mailbox.
"""

from __future__ import annotations

import ipaddress
import time
from datetime import datetime
from typing import Any

import msgspec
from loguru import logger

from capflow.actors.model.settings import ConfigError

LOOPBACK_NAMES = ("localhost",)
HEALTH_STATES = ("ok", "degraded", "fenced", "stopping")


class MetricsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: ``host:port`` of the endpoint (``/metrics``); empty: no endpoint (the default).
    #: Port 0 picks a free port, logged and shown by ``system.health``.
    listen: str = ""
    #: the endpoint has no authentication: it binds a loopback address only, unless
    #: this is set
    allow_remote: bool = False

    def __post_init__(self) -> None:
        if not self.listen:
            return
        host = split_listen(self.listen)[0]
        if not self.allow_remote and not _loopback(host):
            raise ValueError(f"[metrics] listen {self.listen!r} is not a loopback address "
                             "(the endpoint has no authentication); set allow_remote = "
                             "true to expose it")

    @property
    def address(self) -> tuple[str, int] | None:
        return split_listen(self.listen) if self.listen else None


def split_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"[metrics] listen must be host:port (e.g. 127.0.0.1:9464), "
                         f"not {text!r}")
    return host, int(port)


def _loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _epoch(ts: Any) -> float | None:
    return ts.timestamp() if isinstance(ts, datetime) else None


class SystemCollector:
    """Reads a System's state when scraped (a `prometheus_client` custom collector)."""

    def __init__(self, system):
        self.system = system

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        sysm = self.system
        yield from self._health(sysm)
        accounts = sysm.accounts
        statuses = dict(accounts.status) if accounts is not None else {}
        yield from self._accounts(statuses)
        registry = sysm.registry
        g = GaugeMetricFamily("capflow_profiles", "Profiles this server knows")
        g.add_metric([], registry.known_count() if registry is not None else 0)
        yield g

    def _health(self, sysm):
        from prometheus_client.core import GaugeMetricFamily

        trading = sysm.trading
        safety = trading.safety if trading is not None else None
        degraded = dict(safety.degraded) if safety is not None else {}
        fenced = sysm.fenced
        status = ("stopping" if sysm.started_at is None else "fenced" if fenced
                  else "degraded" if degraded else "ok")
        g = GaugeMetricFamily("capflow_health", "1 for the status system.health reports",
                              labels=["status"])
        for s in HEALTH_STATES:
            g.add_metric([s], 1 if s == status else 0)
        yield g
        g = GaugeMetricFamily("capflow_alerts_active",
                              "Conditions alerted on that still stand (what makes health "
                              "degraded), by what they concern", labels=["source"])
        by: dict[str, int] = dict.fromkeys(("profile", "account", "breaker", "prices"), 0)
        for key in degraded:
            by[key[0]] = by.get(key[0], 0) + 1
        for source, n in sorted(by.items()):
            g.add_metric([source], n)
        yield g
        g = GaugeMetricFamily("capflow_trading_halted",
                              "1 while the kill switch blocks entries for every profile "
                              "(global state not ACTIVE)")
        g.add_metric([], 0 if sysm.global_state.state == "ACTIVE" else 1)
        yield g
        started = sysm.started_at
        g = GaugeMetricFamily("capflow_uptime_seconds", "Seconds since the System started")
        g.add_metric([], 0.0 if started is None else time.monotonic() - started)
        yield g

    def _accounts(self, statuses: dict):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        up = GaugeMetricFamily("capflow_account_connected",
                               "1 while the account's broker is connected", labels=["account"])
        age = GaugeMetricFamily("capflow_account_prices_age_seconds",
                                "Seconds since the account's venue prices last arrived",
                                labels=["account"])
        sym_age = GaugeMetricFamily("capflow_venue_price_age_seconds",
                                    "Seconds since the venue's last price of a symbol arrived",
                                    labels=["account", "symbol"])
        unchanged = GaugeMetricFamily("capflow_venue_price_unchanged_seconds",
                                      "Seconds since the venue's bid, ask or last of a symbol "
                                      "last changed (a feed that answers with frozen "
                                      "prices grows it)", labels=["account", "symbol"])
        stale = GaugeMetricFamily("capflow_account_prices_stale",
                                  "1 while the account's venue prices are stale (entries "
                                  "refused with STALE_PRICES)", labels=["account"])
        diffs = GaugeMetricFamily("capflow_reconcile_differences",
                                  "Differences the account's last reconciliation found",
                                  labels=["account"])
        when = GaugeMetricFamily("capflow_reconcile_last_timestamp_seconds",
                                 "Unix time of the account's last reconciliation",
                                 labels=["account"])
        working = GaugeMetricFamily("capflow_account_working_entries",
                                    "Working entry orders of the account", labels=["account"])
        pending = GaugeMetricFamily("capflow_account_pending_bookings",
                                    "Ledger bookings sent by the account and not answered",
                                    labels=["account"])
        errors = CounterMetricFamily("capflow_account_booking_errors",
                                     "Bookings of the account's broker events that failed",
                                     labels=["account"])
        latency = HistogramMetricFamily("capflow_order_ack_latency_seconds",
                                        "Orders from their send to the venue's "
                                        "acknowledgement", labels=["account"])
        for aid in sorted(statuses):
            st = statuses[aid]
            up.add_metric([aid], 1 if st.state == "CONNECTED" else 0)
            working.add_metric([aid], st.working_entries)
            pending.add_metric([aid], st.pending)
            errors.add_metric([aid], st.booking_errors)
            watch = st.prices
            if watch is not None:
                a = watch.age_s()
                if a is not None:
                    age.add_metric([aid], a)
                stale.add_metric([aid], 1 if watch.stale() else 0)
                for symbol, (a, same) in sorted(watch.symbol_ages().items()):
                    sym_age.add_metric([aid, symbol], a)
                    unchanged.add_metric([aid, symbol], same)
            last = st.last_reconcile
            if last is not None:
                diffs.add_metric([aid], last.report.get("differences", 0))
                at = _epoch(last.report.get("ts")) or _epoch(last.ts)
                if at is not None:
                    when.add_metric([aid], at)
            lat = st.latency
            if lat is not None:
                # read the sum before the buckets: an observation landing meanwhile
                # shows in the buckets first, never in the sum alone
                total = lat.sum
                buckets = lat.buckets()
                latency.add_metric([aid], [(_le(b), n) for b, n in buckets], total)
        yield from (up, age, sym_age, unchanged, stale, diffs, when, working, pending,
                    errors, latency)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class MetricsEndpoint:
    """The HTTP endpoint of one System's registry; `stop` closes it."""

    def __init__(self, system, host: str, port: int):
        from prometheus_client import CollectorRegistry, start_http_server

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SystemCollector(system))
        self._server, self._thread = start_http_server(port, host, self.registry)
        bound_port = self._server.server_address[1]
        self.address = f"{host}:{bound_port}" if ":" not in host else f"[{host}]:{bound_port}"
        logger.info("metrics at http://{}/metrics", self.address)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def start_metrics(config: MetricsConfig, system) -> MetricsEndpoint | None:
    where = config.address
    if where is None:
        return None
    try:
        return MetricsEndpoint(system, *where)
    except OSError as exc:  # the port is taken, the address is not this host's
        raise ConfigError(f"[metrics] listen = {config.listen!r}: cannot listen there: "
                          f"{exc.strerror or exc}") from None
