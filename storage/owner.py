"""The owner epoch: at most one capflow server commits to a database, whatever happens to
its connections.

The owner lock (`storage.engine.OwnerLock`) refuses a second server politely at start,
but it lives on a connection of its own (PostgreSQL) or on a lock file (SQLite), while
commits go through other connections, often from the storage process. A network cut or a
restart of the database ends the lock's session and frees the lock; a removed lock file
lets a second `flock` succeed. The server that held it does not notice and goes on
writing. So ownership is decided in the database itself, by a number:

- **Claim.** A starting server, once it holds the owner lock and the migrations ran,
  raises its scope's epoch in `owner_epochs` (``epoch = epoch + 1 ... RETURNING epoch``,
  the row inserted at 1 when missing) before it loads anything, and keeps the value.
  The row also says who raised it (host, pid, the server's start) and when.
- **Fence.** Every commit transaction of the writer reads the epoch as its first
  statement and refuses to commit when it is not the one its server claimed. On
  PostgreSQL the read is ``SELECT ... FOR SHARE``: a commit in flight holds a lock that
  the claim's update waits for, and a commit that starts while a claim is in flight waits
  for it and then reads the new epoch; ``FOR KEY SHARE`` would not conflict with an
  update of a non-key column, and a plain read sees the old epoch (a stale server could
  commit just after a takeover). On SQLite the transaction starts with ``BEGIN
  IMMEDIATE``, which takes the database's single write lock, so a plain read of the
  epoch inside it cannot be overtaken before the commit.
- **Fenced.** A server that reads a newer epoch has been taken over. Its commit is
  rolled back (never retried, never split into one commit per request: nothing of it can
  succeed), the writer fails that write and every later one with ``UNAVAILABLE`` and the
  reason, logs it once at CRITICAL, and `System.fenced` / ``system.health`` report it.
  Nothing is sent to a broker that was not recorded first, and recording fails, so no
  new order leaves a fenced server. Restart it to serve again (it then takes over in its
  turn, once it gets the owner lock).

Today one scope, ``"capflow"``, covers the whole database. Scale-out (partitions across
hosts, planned) makes each partition a scope of its own, fenced the same way.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, select

from capflow.storage import schema

#: the one scope today: the whole database
SCOPE = "capflow"
#: every status, message and reason of a fenced write starts with this
FENCED = "fenced: "

#: what a commit carries: the scope and the epoch its server claimed
Fence = tuple[str, int]


class Fenced(Exception):
    """A commit found another owner's epoch; it was rolled back."""


def claim(engine: Engine, *, started_at: datetime, scope: str = SCOPE) -> int:
    """Raise `scope`'s epoch for this server and return it (in its own transaction)."""
    with engine.begin() as conn:
        return claim_on(conn, started_at=started_at, scope=scope)


def claim_on(conn: Connection, *, started_at: datetime, scope: str = SCOPE) -> int:
    """`claim` inside the caller's transaction (which must commit it)."""
    t = schema.owner_epochs
    who = {"host": socket.gethostname()[:255], "pid": os.getpid(),
           "started_at": started_at, "claimed_at": datetime.now(UTC)}
    raised = conn.execute(t.update().where(t.c.scope == scope)
                          .values(epoch=t.c.epoch + 1, **who)
                          .returning(t.c.epoch)).scalar()
    if raised is not None:
        return raised
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    # the first owner of this scope; two at once (no lock held) cannot both insert
    return conn.execute(insert(t).values(scope=scope, epoch=1, **who)
                        .on_conflict_do_update(index_elements=[t.c.scope],
                                               set_={"epoch": t.c.epoch + 1, **who})
                        .returning(t.c.epoch)).scalar_one()


def current(engine: Engine, scope: str = SCOPE) -> int | None:
    """The scope's epoch as committed now (None: never claimed)."""
    t = schema.owner_epochs
    with engine.connect() as conn:
        return conn.execute(select(t.c.epoch).where(t.c.scope == scope)).scalar()


def check_sql(sqlite: bool) -> str:
    """The fence's read, the first statement of every commit transaction."""
    if sqlite:
        return "SELECT epoch FROM owner_epochs WHERE scope = ?"
    return "SELECT epoch FROM owner_epochs WHERE scope = %s FOR SHARE"


def fenced_reason(db: str, found: int | None, ours: int) -> str:
    if found is None:
        return f"{FENCED}the owner epoch of {db} is gone (this server claimed {ours})"
    if found > ours:
        return f"{FENCED}another capflow server took over {db} (epoch {found} > {ours})"
    return f"{FENCED}the owner epoch of {db} is {found}, not {ours} as this server claimed"
