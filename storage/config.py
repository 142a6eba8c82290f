"""The `[storage]` section: where and how capflow keeps its journal."""

from __future__ import annotations

from typing import Literal

import msgspec


class StorageConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: SQLAlchemy URL. SQLite (WAL, synchronous=FULL) by default; PostgreSQL with
    #: ``postgresql+psycopg://user:pass@host/db``.
    url: str = "sqlite:///data/capflow.db"
    #: false: writes are not persisted at all (benchmarks, throwaway embedding).
    durable: bool = True
    #: most write requests grouped into one transaction
    max_batch: int = 256
    #: "process": the SQL runs in a child process that owns the database (the fast
    #: default: it does not compete with the actors for the interpreter lock);
    #: "thread": in a thread of this process
    writer: Literal["process", "thread"] = "process"
    #: SQLite only. "FULL": a commit is on disk before it is acknowledged (survives a
    #: power loss). "NORMAL": survives a crash of the process (also SIGKILL) but not of
    #: the machine, and commits several times faster. PostgreSQL: see its own
    #: synchronous_commit.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    #: read the storage URL from ``DATABASE_URL`` (the name many platforms set) when it
    #: is set; off by default, so a variable meant for another program never points
    #: capflow's migrations at its database. ``CAPFLOW_STORAGE__URL`` still wins.
    url_from_database_url: bool = False
