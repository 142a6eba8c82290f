"""CURVE key files (`capflow keys generate`, protocol/auth.py): a secret key is readable
by its owner only from the moment it exists, in a directory only its owner may enter,
and git ignores both."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from capflow.actors.config import ConfigError
from capflow.protocol.auth import generate

ROOT = Path(__file__).resolve().parents[2]


def test_git_ignores_key_directories_and_secret_keys():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("keys/server.key_secret", "keys/bot-1.key", "keys/clients.toml",
                 "deploy/prod/keys/server.key", "elsewhere/bot-1.key_secret"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert ignored.returncode == 0, f"{path} is not ignored by git"
    # the project's own files still count
    assert subprocess.run(["git", "check-ignore", "-q", "protocol/auth.py"],
                          cwd=ROOT).returncode == 1


#: generate keys while watching, at every audit event of the process (each file opened,
#: each directory listed, each chmod...), for a secret key file anyone else could read
WATCH = textwrap.dedent("""\
    import os, sys
    from pathlib import Path

    os.umask(0o022)  # the usual: what is not asked for otherwise is world-readable
    keys, seen, busy = Path(sys.argv[1]), set(), False

    def watch(event, args):
        global busy
        if busy:
            return
        busy = True
        try:
            for p in keys.glob("*.key_secret"):
                if p.stat().st_mode & 0o077:
                    seen.add(p.name)
        except OSError:
            pass
        finally:
            busy = False

    sys.addaudithook(watch)
    from capflow.protocol.auth import generate

    generate(keys, ["bot-1", "bot-2"])
    busy = True
    print(sorted(seen))
    """)


def test_secret_keys_are_never_readable_by_others_not_even_while_written(tmp_path):
    keys = tmp_path / "keys"
    (tmp_path / "watch.py").write_text(WATCH)
    proc = subprocess.run([sys.executable, str(tmp_path / "watch.py"), str(keys)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"readable by others at some moment: {proc.stdout}"
    modes = {p.name: p.stat().st_mode & 0o777 for p in keys.iterdir()}
    assert modes == {"server.key": 0o644, "server.key_secret": 0o600, "bot-1.key": 0o644,
                     "bot-1.key_secret": 0o600, "bot-2.key": 0o644,
                     "bot-2.key_secret": 0o600, "clients.toml": 0o644}
    assert keys.stat().st_mode & 0o777 == 0o700
    # what zmq reads back
    import zmq.auth

    public, secret = zmq.auth.load_certificate(str(keys / "bot-1.key_secret"))
    assert len(public) == 40 and len(secret) == 40
    assert zmq.auth.load_certificate(str(keys / "bot-1.key")) == (public, None)


@pytest.mark.parametrize("clients, why", [
    (["bot", "bot"], "given twice"),
    (["../outside"], "client name"),
    (["server"], "server"),
    (['bot"1'], "client name"),
    ([""], "client name"),
])
def test_bad_client_names_are_refused_before_anything_is_written(tmp_path, clients, why):
    keys = tmp_path / "keys"
    with pytest.raises(ConfigError, match=why):
        generate(keys, clients)
    assert list(tmp_path.iterdir()) == []  # no key directory, nothing beside it


def test_a_client_that_has_keys_already_stops_the_whole_generation(tmp_path):
    keys = tmp_path / "keys"
    generate(keys, ["bot"])
    before = {p.name: p.read_bytes() for p in keys.iterdir()}
    with pytest.raises(ConfigError, match="already exists"):
        generate(keys, ["new", "bot"])
    assert {p.name: p.read_bytes() for p in keys.iterdir()} == before

