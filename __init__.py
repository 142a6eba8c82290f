"""capflow: the capital and order management core that trading bots talk to.

Installed, everything lives under this one name: ``capflow.actors`` (the ledgers, the
order flow, risk, allocation), ``capflow.protocol`` (the ZeroMQ server and clients),
``capflow.brokers`` (broker adapters), ``capflow.storage``, ``capflow.bench`` and the
command line, ``capflow.run`` (with ``capflow.cli``).

For embedding, the names most programs need are here, loaded on first use (importing
``capflow`` alone pulls in no actor framework, socket library or database driver)::

    from capflow import System, Client

As a library, capflow leaves its host's logging alone: its messages (loguru's, under the
name ``capflow``) are off until `enable_logging()` turns them on; the command line does
that itself. Importing ``capflow`` does not import loguru either: the messages are turned
off when the first module of capflow is imported.
"""

from __future__ import annotations

import importlib
import sys
import threading
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
    "ManualClock": "capflow.actors.model.clock",
    "CapflowError": "capflow.actors.model.errors",
    "Denied": "capflow.actors.model.errors",
    "InvalidArgument": "capflow.actors.model.errors",
    "sqlite_url": "capflow.storage.engine",
}

__all__ = ["AsyncClient", "CapflowError", "Client", "ClientError", "Config", "ConfigError",
           "Denied", "InvalidArgument", "ManualClock", "System", "disable_logging",
           "enable_logging", "load_config", "sqlite_url"]

if TYPE_CHECKING:  # for type checkers and editors; never imported at run time
    from capflow.actors.config import Config, load_config
    from capflow.actors.model.clock import ManualClock
    from capflow.actors.model.errors import CapflowError, Denied, InvalidArgument
    from capflow.actors.model.settings import ConfigError
    from capflow.actors.system import System
    from capflow.protocol.client import AsyncClient, Client, ClientError
    from capflow.storage.engine import sqlite_url


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'capflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access does not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


# -- logging: off until asked for ------------------------------------------------------

#: None until decided: turned off when the first capflow module is imported, or turned
#: on (or off) before that by `enable_logging` / `disable_logging`
_logging: bool | None = None
_logging_lock = threading.Lock()


def enable_logging() -> None:
    """Let capflow's messages through to loguru's sinks (loguru's default one writes every
    level to stderr; add your own with ``loguru.logger.add``). ``capflow serve`` and the
    other commands do this themselves, in their own format (capflow.actors.logs)."""
    _set_logging(True)


def disable_logging() -> None:
    """Turn capflow's messages off again, as they are by default."""
    _set_logging(False)


def _set_logging(on: bool) -> None:
    global _logging
    with _logging_lock:
        from loguru import logger

        (logger.enable if on else logger.disable)("capflow")
        _logging = on


class _OffOnFirstImport:
    """On `sys.meta_path`: when the first module of capflow that may log is about to be
    imported (any outside the domain, capflow.actors.model, which logs nothing and
    imports no logging library), turn capflow's messages off, unless the host has
    decided already; then it finds nothing and does nothing. It stays in place, inert:
    taking it out could make an import that runs meanwhile in another thread skip the
    finder after it."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        global _logging
        if _logging is None and name.startswith("capflow.") and not _quiet(name):
            with _logging_lock:
                if _logging is None:
                    from loguru import logger

                    logger.disable("capflow")
                    _logging = False
        return None


def _quiet(name: str) -> bool:
    """The packages that log nothing: the domain, and the bare package holding it."""
    return name == "capflow.actors" or name.startswith("capflow.actors.model")


if not any(type(f).__name__ == "_OffOnFirstImport" for f in sys.meta_path):
    sys.meta_path.insert(0, _OffOnFirstImport())
