"""Shared fixtures: real SQLite files, real actors, a manual clock; PostgreSQL from
tests/postgres.py (a throwaway server, skipped loudly where no server binaries exist)."""

from __future__ import annotations

import pytest
from loguru import logger

import capflow
from capflow.actors.config import load_config
from capflow.actors.model.clock import ManualClock
from capflow.actors.system import System

from .postgres import pg_server, pg_url, storage_url  # noqa: F401 -- fixtures

logger.remove()
logger.add(lambda msg: None, level="ERROR")  # keep test output readable; errors still run
capflow.enable_logging()  # off by default, as a library's; tests read capflow's messages


#: an allocation policy under which the whole ledger may be reserved: no cash kept back
#: (liquidity is unknown, so the fallback applies), no concentration limit, no minimum;
#: for the tests of the ledger's own mechanics
OPEN_ALLOCATION = {"fallback_reserved_pct": "0", "max_ticker": "1", "max_sector": "1",
                   "max_industry": "1", "max_area": "1", "min_order_notional": "0"}


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path}/capflow.db"


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def make_system(tmp_path):
    """Start Systems with config overrides; every one is stopped at the end of the test.
    The market simulator is in step mode (nothing moves unless a test advances it) and
    the signal audit log is under the test's directory, unless a test says otherwise.
    The allocation cap on reservations is opened up (`OPEN_ALLOCATION`) unless a test
    passes its own ``allocation`` section (``allocation={}``: the defaults)."""
    started: list[System] = []

    def make(url: str | None = None, *, clock=None, **sections) -> System:
        storage = dict(sections.pop("storage", {}))
        if url is not None:
            storage["url"] = url
        sections["simulator"] = {"mode": "step", **sections.get("simulator", {})}
        sections["oms"] = {"audit_log": str(tmp_path / "signals.jsonl"),
                           **sections.get("oms", {})}
        sections.setdefault("allocation", OPEN_ALLOCATION)
        cfg = load_config(env={}, storage=storage, **sections)
        system = System(cfg, clock=clock).start()
        started.append(system)
        return system

    yield make
    for system in reversed(started):
        system.stop()
