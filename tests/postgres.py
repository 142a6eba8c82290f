"""A throwaway PostgreSQL server for the storage tests.

`pg_server` (session) runs `initdb` + `pg_ctl` from Debian's server package into a temp
dir, listening on 127.0.0.1 only, and stops it at the end of the session whatever
happened; `pg_url` gives each test its own fresh database; `storage_url` runs a test on
SQLite and on PostgreSQL. Without server binaries the PostgreSQL cases are skipped, with
a warning that says so (never silently).

PostgreSQL refuses to run as root: when the tests run as root, the data dir is owned by
the ``postgres`` user and the server commands run as that user through ``su``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

NO_SERVER = ("LOUD REASON: no PostgreSQL server binaries found in /usr/lib/postgresql/*/bin; "
             "install Debian's postgresql package to run the PostgreSQL storage tests")
PREFERRED_MAJOR = "15"
HOST = "127.0.0.1"
USER = "postgres"


def _find_bindir() -> Path | None:
    """The bin dir with initdb, pg_ctl and postgres: version 15 if present, else the
    newest one found."""
    found: dict[str, Path] = {}
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        p = Path(d)
        if all((p / exe).is_file() and os.access(p / exe, os.X_OK)
               for exe in ("initdb", "pg_ctl", "postgres")):
            found[p.parent.name] = p
    if not found:
        return None
    if PREFERRED_MAJOR in found:
        return found[PREFERRED_MAJOR]

    def major(v: str) -> tuple[int, str]:
        return (int(v), v) if v.isdigit() else (-1, v)

    return found[max(found, key=major)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    host: str
    port: int
    user: str
    bindir: Path
    datadir: Path
    logfile: Path

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    def _admin(self):
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.user,
                               dbname="postgres", autocommit=True, connect_timeout=10)

    def create_database(self) -> str:
        """Create an empty database with a fresh name; returns the name."""
        name = f"t_{uuid.uuid4().hex}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class _Runner:
    """Runs server commands directly, or as the postgres user when we are root."""

    def __init__(self) -> None:
        self.as_postgres = os.geteuid() == 0

    def run(self, argv: list[str], *, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess:
        su = ["su", USER, "-s", "/bin/bash", "-c", shlex.join(argv)]
        cmd = su if self.as_postgres else argv
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} failed ({proc.returncode}):\n"
                               f"{proc.stdout}\n{proc.stderr}")
        return proc


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no server log)"


@pytest.fixture(scope="session")
def pg_server():
    bindir = _find_bindir()
    if bindir is None:
        warnings.warn(NO_SERVER, stacklevel=1)
        print(f"\n*** {NO_SERVER} ***", file=sys.stderr)
        pytest.skip(NO_SERVER)
    runner = _Runner()
    # as root, the dir must be reachable by the postgres user: /tmp is, $TMPDIR may not be
    parent = "/tmp" if runner.as_postgres and os.path.isdir("/tmp") else None
    base = Path(tempfile.mkdtemp(prefix="capflow-pg-", dir=parent))
    datadir, sockdir, logfile = base / "data", base / "sock", base / "server.log"
    started = False
    try:
        sockdir.mkdir()
        if runner.as_postgres:
            pw = pwd.getpwnam(USER)
            for p in (base, sockdir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        runner.run([str(bindir / "initdb"), "-D", str(datadir), "-A", "trust", "-U", USER,
                    "--encoding=UTF8", "--locale=C", "--no-sync"])
        for _attempt in range(3):  # the free port may be taken between bind and listen
            port = _free_port()
            opts = (f"-p {port} -k {sockdir} -c listen_addresses={HOST} -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off")
            proc = runner.run([str(bindir / "pg_ctl"), "-w", "-t", "60", "-D", str(datadir),
                               "-l", str(logfile), "-o", opts, "start"], check=False)
            if proc.returncode == 0:
                started = True
                break
        if not started:
            raise RuntimeError(f"PostgreSQL did not start:\n{proc.stdout}\n{proc.stderr}\n"
                               f"{_tail(logfile)}")
        yield PgServer(HOST, port, USER, bindir, datadir, logfile)
    finally:
        try:
            if started:
                runner.run([str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate",
                            "-w", "stop"], check=False, timeout=60)
        finally:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server):
    name = pg_server.create_database()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request, tmp_path):
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    return f"sqlite:///{tmp_path}/capflow.db"
