"""Engines: a SQLite file in WAL mode by default, PostgreSQL by URL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def open_engine(url: str, *, pool_size: int = 8) -> Engine:
    """Create the engine for `url`, creating the SQLite file's folder if needed.

    SQLite runs in WAL mode with ``synchronous=FULL``: a commit is on disk when it
    returns, so an acknowledged mutation survives a crash of the process or the machine.
    """
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u, pool_size=pool_size, max_overflow=32,
                               connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(u, pool_size=pool_size, max_overflow=32, pool_pre_ping=True)


def describe(url: str) -> str:
    """The URL with its password hidden, for logs and `system.health`."""
    return make_url(url).render_as_string(hide_password=True)
