"""CURVE security: server keys, the client keys it accepts, and what each may touch.

``keys_dir`` holds ``server.key`` / ``server.key_secret`` (made by
``capflow keys generate``) and ``clients.toml``::

    [clients.bot-1]
    public_key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"   # z85, from bot-1.key
    profiles = ["alpha", "beta"]                           # or ["*"] for all

A client whose key is not listed fails the CURVE handshake and gets no answer at all; a
listed client gets `FORBIDDEN` for any profile it is not given.

A ``.key_secret`` file is its owner's alone from the moment it exists (created 0600, in a
key directory made 0700); one that others can read is reported, with the ``chmod 600``
that fixes it, by ``capflow keys`` and by a server that starts with it. ``clients.toml``
decides who may touch what: it is written 0600 whatever the umask (an existing one keeps
its mode, less write access for others), never appended to when it does not parse, and a
key directory or table that others can write is reported the same way.
"""

from __future__ import annotations

import os
import re
import threading
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import zmq
import zmq.auth
from loguru import logger
from zmq.auth.thread import ThreadAuthenticator

from capflow.actors.model.settings import ConfigError
from capflow.protocol.opkit import Caller


class Authorizer:
    def __init__(self, keys_dir: Path, server_public: bytes, server_secret: bytes,
                 clients: dict[str, Caller]):
        self.keys_dir = keys_dir
        self.server_public = server_public
        self.server_secret = server_secret
        self.clients = clients  # z85 public key -> Caller
        self._auth: ThreadAuthenticator | None = None

    @classmethod
    def load(cls, keys_dir: str | Path) -> Authorizer:
        d = Path(keys_dir)
        secret_file = d / "server.key_secret"
        if not secret_file.exists():
            raise ConfigError(f"security.curve is on but {secret_file} does not exist; "
                              "run `capflow keys generate`")
        warn_if_readable(d)
        warn_if_writable(d)
        public, secret = zmq.auth.load_certificate(secret_file)
        clients: dict[str, Caller] = {}
        table = d / "clients.toml"
        if table.exists():
            try:
                data = tomllib.loads(table.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{table} is not valid TOML: {exc}") from None
            for name, entry in data.get("clients", {}).items():
                key = entry.get("public_key")
                profiles = entry.get("profiles", [])
                if not isinstance(key, str) or len(key) != 40:
                    raise ConfigError(f"{table}: clients.{name}.public_key must be a 40-char "
                                      "z85 key")
                if not isinstance(profiles, list):
                    raise ConfigError(f"{table}: clients.{name}.profiles must be a list")
                allowed = None if "*" in profiles else frozenset(map(str, profiles))
                if key in clients:  # one of two grants would silently win
                    raise ConfigError(f"{table}: clients.{name} has the public key of "
                                      f"{clients[key].name.removeprefix('key:')}")
                clients[key] = Caller(f"key:{name}", allowed)
        return cls(d, public, secret, clients)

    # the ZAP credentials provider: called by the authenticator for each handshake
    def callback(self, domain: str, key: bytes) -> bool:
        return key.decode("ascii") in self.clients

    def caller(self, user_id: str | None) -> Caller:
        caller = self.clients.get(user_id or "")
        # the handshake already refused unknown keys; deny everything if one slips by
        return caller or Caller("unknown", frozenset())

    def secure(self, ctx: zmq.Context, *sockets: zmq.Socket) -> None:
        self._auth = ThreadAuthenticator(ctx)
        self._auth.start()
        self._auth.configure_curve_callback("*", credentials_provider=self)
        for sock in sockets:
            sock.curve_secretkey = self.server_secret
            sock.curve_publickey = self.server_public
            sock.curve_server = True

    @property
    def thread(self) -> threading.Thread:
        """The thread that answers the ZAP requests of every CURVE handshake."""
        return self._auth.thread

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


#: a client's name: its key files' names and its table in clients.toml
CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


def generate(keys_dir: str | Path, clients: list[str]) -> list[Path]:
    """Make the server key pair (if missing) and one key pair per client name; list each
    new client in clients.toml with no profiles (edit it to grant some). Every name is
    checked before anything is written."""
    d = Path(keys_dir)
    for name in clients:
        if not CLIENT_NAME.fullmatch(name):
            raise ConfigError(f"client name {name!r} must be 1..128 letters, digits and "
                              ". _ @ -, starting with a letter or digit")
        if name == "server":
            raise ConfigError("client name 'server' is the server's own key")
        if clients.count(name) > 1:
            raise ConfigError(f"client {name!r} is given twice")
        for suffix in (".key", ".key_secret"):
            if (d / f"{name}{suffix}").exists():
                raise ConfigError(f"a key for client {name!r} already exists in {d}")
    table = d / "clients.toml"
    lines = [_client_table(table, clients)] if table.exists() else [
        "# client public key -> the profiles it may touch ([\"*\"]: all)\n"]
    d.mkdir(mode=0o700, parents=True, exist_ok=True)  # an existing one is left as it is
    made = []
    if not (d / "server.key_secret").exists():
        made += _key_pair(d, "server")[0]
    for name in clients:
        files, public = _key_pair(d, name)
        made += files
        lines.append(f'\n[clients."{name}"]\npublic_key = "{public}"\nprofiles = []\n')
    _write_table(table, "".join(lines))
    return made


def _client_table(table: Path, clients: list[str]) -> str:
    """The text of an existing clients.toml that the new clients can be added to: one
    that does not parse, or lists one of them already, is refused (a server would not
    start with what appending made of it)."""
    text = table.read_text()
    try:
        listed = tomllib.loads(text).get("clients", {})
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{table} is not valid TOML ({exc}): fix it first; nothing was "
                          "written") from None
    for name in clients:
        if name in listed:
            raise ConfigError(f"client {name!r} is listed in {table} already (its keys are "
                              "gone?): remove it there first; nothing was written")
    return text


def _write_table(table: Path, text: str) -> None:
    """Write clients.toml whole (a new file, then renamed over the old one). It says who
    may touch which profiles: a new one is its owner's alone (0600) whatever the umask,
    and an existing one keeps its mode without write access for group and others."""
    mode = table.stat().st_mode & 0o755 if table.exists() else 0o600
    new = table.with_name(f".{table.name}.new")
    new.unlink(missing_ok=True)
    fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask took some bits away, never added any
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(new, table)
    except BaseException:
        new.unlink(missing_ok=True)
        raise


def _key_pair(d: Path, name: str) -> tuple[list[Path], str]:
    """Write ``<name>.key`` and ``<name>.key_secret``, in the certificate format that
    zmq.auth reads; the files and the public key."""
    public, secret = zmq.curve_keypair()
    files = [d / f"{name}.key", d / f"{name}.key_secret"]
    files[0].unlink(missing_ok=True)  # a public key left behind by a lost secret one
    _write_certificate(files[0], public, None)
    _write_certificate(files[1], public, secret)
    return files, public.decode()


def _write_certificate(path: Path, public: bytes, secret: bytes | None) -> None:
    """A new certificate file. A secret one is created 0600: no one else can read it at
    any moment, not only once it is written."""
    text = (f"#   ZeroMQ CURVE {'Secret' if secret else 'Public'} Certificate, made by "
            f"capflow keys generate, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n"
            + ("#   Readable by its owner only: keep it so (chmod 600).\n" if secret else "")
            + f'\nmetadata\ncurve\n    public-key = "{public.decode()}"\n'
            + (f'    secret-key = "{secret.decode()}"\n' if secret else ""))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
    except BaseException:
        path.unlink(missing_ok=True)  # never half a key
        raise


def readable_secrets(keys_dir: str | Path) -> list[tuple[Path, int]]:
    """The secret key files in `keys_dir` that others than their owner can read, with
    their permission bits."""
    found = []
    for path in sorted(Path(keys_dir).glob("*.key_secret")):
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:  # gone meanwhile
            continue
        if mode & 0o044:
            found.append((path, mode))
    return found


def warn_if_readable(keys_dir: str | Path) -> list[Path]:
    """Log a warning for each secret key file in `keys_dir` that others can read; those
    files."""
    found = readable_secrets(keys_dir)
    for path, mode in found:
        who = " and ".join(w for w, bit in (("group", 0o040), ("others", 0o004)) if mode & bit)
        logger.warning("{} is readable by {} (mode {:04o}): its key is not secret; run "
                       "`chmod 600 {}`", path, who, mode, path)
    return [path for path, _ in found]


def warn_if_writable(keys_dir: str | Path) -> list[Path]:
    """Log a warning when others than its owner can write the key directory or its
    clients.toml (they could list a key of their own, or swap the server's); those
    paths."""
    d = Path(keys_dir)
    found = []
    for path in (d, d / "clients.toml"):
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:  # not there (yet)
            continue
        if mode & 0o022:
            found.append(path)
            who = " and ".join(w for w, bit in (("group", 0o020), ("others", 0o002))
                               if mode & bit)
            logger.warning("{} is writable by {} (mode {:04o}): they can change which "
                           "clients this server accepts; run `chmod go-w {}`", path, who,
                           mode, path)
    return found
