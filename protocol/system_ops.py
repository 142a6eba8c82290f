"""The system ops: `system.health` (what the server is and whether it is well) and
`system.metrics` (the gateway's request metrics, protocol/metrics.py). The rules of a
handler are protocol/opkit.py's; `health` builds the server's answer to `system.health`
(the server adds what only it knows, such as a failed socket thread)."""

from __future__ import annotations

import time
from typing import Any

from capflow.protocol.codec import VERSION, WireError
from capflow.protocol.opkit import Caller, Done, NoArgs, OpContext, OpTable


def op_health(ctx: OpContext, args: NoArgs, caller: Caller, done: Done) -> None:
    info = ctx.server_info()
    if caller.profiles is not None:
        # a key limited to some profiles learns nothing of the others (not even how many
        # there are), nor where the data lives or the metrics endpoint listens
        info["profiles"] = info["storage"] = info["metrics"] = None
        # the reasons name profiles and accounts; the status alone says something is off
        info["reasons"] = None
    done(info)


def op_metrics(ctx: OpContext, args: NoArgs, caller: Caller, done: Done) -> None:
    # open to every caller, like system.health: counts and latencies per op, nothing
    # about any profile
    if ctx.metrics is None:
        raise WireError("UNAVAILABLE", "this server keeps no request metrics", {})
    done(ctx.metrics())


SYSTEM_OPS: OpTable = {
    "system.health": (NoArgs, op_health),
    "system.metrics": (NoArgs, op_metrics),
}


def health(system, started: float, environment: str, curve: bool) -> dict[str, Any]:
    from capflow.storage.engine import describe

    cfg = system.config
    fenced = system.fenced
    reasons = system.trading.safety.reasons() if system.trading is not None else []
    status = ("stopping" if system.started_at is None else "fenced" if fenced
              else "degraded" if reasons else "ok")
    return {"status": status,
            "version": _version(), "protocol": VERSION, "environment": environment,
            "broker_mode": getattr(system.accounts, "mode", "paper"),
            "oms_enabled": cfg.oms.enabled,
            "storage": describe(cfg.storage.url) if cfg.storage.durable else "memory",
            "uptime_s": round(time.monotonic() - started, 3),
            "profiles": system.registry.known_count(), "security": "curve" if curve else "plain",
            "trading_state": system.global_state.state, "fenced": fenced,
            "metrics": system.metrics_address,
            "reasons": ([fenced] if fenced else []) + reasons}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("capflow")
    except Exception:
        return "0+unknown"
