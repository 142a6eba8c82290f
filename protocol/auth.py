"""CURVE security: server keys, the client keys it accepts, and what each may touch.

``keys_dir`` holds ``server.key`` / ``server.key_secret`` (made by
``capflow keys generate``) and ``clients.toml``::

    [clients.bot-1]
    public_key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"   # z85, from bot-1.key
    profiles = ["alpha", "beta"]                           # or ["*"] for all

A client whose key is not listed fails the CURVE handshake and gets no answer at all; a
listed client gets `FORBIDDEN` for any profile it is not given.
"""

from __future__ import annotations

import threading
import tomllib
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from capflow.actors.config import ConfigError
from capflow.protocol.ops import Caller


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


def generate(keys_dir: str | Path, clients: list[str]) -> list[Path]:
    """Make the server key pair (if missing) and one key pair per client name; list each
    new client in clients.toml with no profiles (edit it to grant some)."""
    d = Path(keys_dir)
    d.mkdir(parents=True, exist_ok=True)
    made = []
    if not (d / "server.key_secret").exists():
        zmq.auth.create_certificates(d, "server")
        made += [d / "server.key", d / "server.key_secret"]
    table = d / "clients.toml"
    lines = [table.read_text()] if table.exists() else [
        "# client public key -> the profiles it may touch ([\"*\"]: all)\n"]
    for name in clients:
        if (d / f"{name}.key").exists():
            raise ConfigError(f"a key for client {name!r} already exists in {d}")
        pub_file, secret_file = zmq.auth.create_certificates(d, name)
        public, _ = zmq.auth.load_certificate(pub_file)
        lines.append(f'\n[clients."{name}"]\npublic_key = "{public.decode()}"\nprofiles = []\n')
        made += [Path(pub_file), Path(secret_file)]
    table.write_text("".join(lines))
    for p in d.glob("*.key_secret"):
        p.chmod(0o600)
    return made
