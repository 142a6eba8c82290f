"""capflow: the capital and order management core that trading bots talk to.

Installed, everything lives under this one name: ``capflow.actors`` (the ledgers, the
order flow, risk, allocation), ``capflow.protocol`` (the ZeroMQ server and clients),
``capflow.brokers`` (broker adapters), ``capflow.storage``, ``capflow.bench`` and the
command line, ``capflow.run`` (with ``capflow.cli``).

For embedding, the names most programs need are here, loaded on first use (importing
``capflow`` alone pulls in no actor framework, socket library or database driver)::

    from capflow import System, Client
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: what `from capflow import X` gives, and where it lives
_EXPORTS = {
    "System": "capflow.actors.system",
    "Client": "capflow.protocol.client",
    "AsyncClient": "capflow.protocol.client",
    "ClientError": "capflow.protocol.client",
    "Config": "capflow.actors.config",
    "ConfigError": "capflow.actors.config",
    "load_config": "capflow.actors.config",
    "ManualClock": "capflow.actors.clock",
    "CapflowError": "capflow.actors.errors",
    "Denied": "capflow.actors.errors",
    "InvalidArgument": "capflow.actors.errors",
}

__all__ = ["AsyncClient", "CapflowError", "Client", "ClientError", "Config", "ConfigError",
           "Denied", "InvalidArgument", "ManualClock", "System", "load_config"]

if TYPE_CHECKING:  # for type checkers and editors; never imported at run time
    from capflow.actors.clock import ManualClock
    from capflow.actors.config import Config, ConfigError, load_config
    from capflow.actors.errors import CapflowError, Denied, InvalidArgument
    from capflow.actors.system import System
    from capflow.protocol.client import AsyncClient, Client, ClientError


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'capflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access does not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
