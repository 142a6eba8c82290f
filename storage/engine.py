"""Engines: a SQLite file in WAL mode by default, PostgreSQL by URL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

SQLITE_SYNC = ("FULL", "NORMAL")


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for another database or one kept in memory."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database).expanduser()


def sqlite_url(path: str | Path) -> str:
    """The storage URL of the SQLite file at `path`, whatever its name holds (a ``?`` or
    a ``%`` would change what an f-string URL means)."""
    from sqlalchemy.engine import URL

    return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)


def stored(url: str) -> bool:
    """Whether there is a capflow storage at `url` to read, as far as can be told
    without creating anything: a SQLite file must exist (a server database is taken to
    exist; opening one creates nothing)."""
    path = sqlite_path(url)
    return path is None or path.is_file()


def open_engine(url: str, *, pool_size: int = 8, synchronous: str = "FULL",
                create: bool = True) -> Engine:
    """Create the engine for `url`, creating the SQLite file's folder if needed (not
    with `create` False: a reader, who checked with `stored` that the file is there).

    SQLite runs in WAL mode. With ``synchronous=FULL`` (the default) a commit is on disk
    when it returns: an acknowledged mutation survives a crash of the process or of the
    machine. ``NORMAL`` survives a crash of the process (also SIGKILL) but not a power
    loss or an OS crash, and commits several times faster.
    """
    if synchronous not in SQLITE_SYNC:
        raise ValueError(f"synchronous must be one of {SQLITE_SYNC}")
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if create and u.database and u.database != ":memory:":
            Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u, pool_size=pool_size, max_overflow=32,
                               connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(u, pool_size=pool_size, max_overflow=32, pool_pre_ping=True)


def describe(url: str) -> str:
    """The URL with its password hidden, for logs and `system.health`."""
    return make_url(url).render_as_string(hide_password=True)


class OwnerLock:
    """A second capflow server on the same database is refused at start. SQLite: an
    exclusive `flock` on ``<db>.lock``; PostgreSQL: a session advisory lock. The kernel or
    the server drops either when the process dies, even by SIGKILL.

    The lock alone does not keep two servers from committing: it can be lost while its
    holder runs on (the advisory lock's session ended by a network cut or a database
    restart, the lock file removed), and commits go through other connections. The owner
    epoch does that (storage/owner.py): every commit checks it."""

    PG_KEY = 7_100_001

    def __init__(self, engine: Engine):
        self.engine = engine
        self._fd: int | None = None
        self._conn = None

    def acquire(self) -> OwnerLock:
        from capflow.actors.model.errors import Unavailable

        url = self.engine.url
        if url.get_backend_name() == "sqlite":
            if not url.database or url.database == ":memory:":
                return self
            import fcntl
            import os

            path = Path(url.database).expanduser()
            fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise Unavailable(f"another capflow process owns {path}") from None
            self._fd = fd
        else:
            conn = self.engine.connect()
            if not conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({self.PG_KEY})").scalar():
                conn.close()
                raise Unavailable(f"another capflow process owns {describe(str(url))}")
            conn.commit()
            self._conn = conn
        return self

    def release(self) -> None:
        if self._fd is not None:
            import os

            os.close(self._fd)
            self._fd = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
