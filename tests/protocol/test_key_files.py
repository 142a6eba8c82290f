"""CURVE key files (`capflow keys generate`, protocol/auth.py): a secret key is readable
by its owner only from the moment it exists, in a directory only its owner may enter,
and git ignores both; a secret key someone else can read is reported, by `capflow keys`
and by a server that starts with it, with the command that fixes it."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from loguru import logger

import capflow
from capflow import run
from capflow.actors.model.settings import ConfigError
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
                     "bot-2.key_secret": 0o600, "clients.toml": 0o600}
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


@pytest.fixture
def cli_logging():
    """`capflow ...` takes the process's logging over: give the test run's back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    logger.remove()
    logger.add(lambda msg: None, level="ERROR")
    root.handlers[:] = handlers
    root.setLevel(level)
    capflow.enable_logging()


def test_capflow_keys_warns_of_a_secret_key_others_can_read(tmp_path, capsys,
                                                            cli_logging):
    keys = tmp_path / "keys"
    assert run.main(["keys", "generate", "bot-1", "--dir", str(keys)]) == 0
    assert "WARNING" not in capsys.readouterr().err
    (keys / "bot-1.key_secret").chmod(0o644)  # copied around, say
    assert run.main(["keys", "generate", "--dir", str(keys)]) == 0
    [warning] = [line for line in capsys.readouterr().err.splitlines() if "WARNING" in line]
    assert f"{keys / 'bot-1.key_secret'} is readable by group and others" in warning
    assert f"chmod 600 {keys / 'bot-1.key_secret'}" in warning
    assert (keys / "bot-1.key_secret").stat().st_mode & 0o777 == 0o644  # told, not changed


def test_a_server_warns_at_start_of_a_secret_key_others_can_read(tmp_path, live):
    keys = tmp_path / "keys"
    generate(keys, ["bot-1", "bot-2"])
    (keys / "server.key_secret").chmod(0o640)
    (keys / "bot-2.key_secret").chmod(0o604)
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(m.record["message"]), level="WARNING",
                      filter="capflow.protocol")
    try:
        live(security={"curve": True, "keys_dir": str(keys)})
    finally:
        logger.remove(sink)
    server_key, bot_key = keys / "server.key_secret", keys / "bot-2.key_secret"
    assert [w for w in warnings if "readable" in w] == [
        f"{bot_key} is readable by others (mode 0604): its key is not secret; run "
        f"`chmod 600 {bot_key}`",
        f"{server_key} is readable by group (mode 0640): its key is not secret; run "
        f"`chmod 600 {server_key}`"]


CAPFLOW = str(Path(sys.executable).with_name("capflow"))


def _keys(*argv: str) -> subprocess.CompletedProcess:
    """`capflow keys generate ...` under umask 000: whatever is not asked for is
    writable by anyone."""
    return subprocess.run([CAPFLOW, "keys", "generate", *argv], capture_output=True,
                          text=True, timeout=60, umask=0)


def test_the_client_table_is_never_writable_by_others_whatever_the_umask(tmp_path):
    keys = tmp_path / "keys"
    done = _keys("bot-1", "--dir", str(keys))
    assert done.returncode == 0, done.stderr
    assert (keys / "clients.toml").stat().st_mode & 0o777 == 0o600
    (keys / "clients.toml").chmod(0o666)  # copied around, say
    done = _keys("bot-2", "--dir", str(keys))
    assert done.returncode == 0, done.stderr
    assert (keys / "clients.toml").stat().st_mode & 0o777 == 0o644  # read bits kept
    assert {"bot-1", "bot-2"} <= set(__import__("tomllib").loads(
        (keys / "clients.toml").read_text())["clients"])


def test_a_key_folder_others_can_write_is_warned_of(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    keys.chmod(0o777)
    done = _keys("bot-1", "--dir", str(keys))
    assert done.returncode == 0, done.stderr
    [warning] = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert (f"{keys} is writable by group and others (mode 0777): they can change which "
            f"clients this server accepts; run `chmod go-w {keys}`") in warning


@pytest.mark.parametrize("table, said", [
    ("[clients.bot-1\npublic_key = 1\n", "is not valid TOML"),
    ('[clients."bot-2"]\npublic_key = "x"\nprofiles = []\n', "listed in"),
])
def test_a_client_table_that_cannot_take_more_is_refused_with_nothing_written(
        tmp_path, table, said):
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    (keys / "clients.toml").write_text(table)
    done = _keys("bot-2", "--dir", str(keys))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("capflow: ") and said in done.stderr
    assert str(keys / "clients.toml") in done.stderr
    assert done.stderr.endswith("nothing was written\n") and done.stderr.count("\n") == 1
    assert [p.name for p in keys.iterdir()] == ["clients.toml"]
    assert (keys / "clients.toml").read_text() == table


def test_a_key_folder_that_is_a_file_or_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    done = _keys("bot-1", "--dir", str(tmp_path / "file"))
    assert (done.returncode, done.stderr) == (
        2, f"capflow: --dir {tmp_path / 'file'}: that is a file, not a key folder\n")
    done = _keys("bot-1", "--dir", str(tmp_path / "file" / "keys"))
    assert (done.returncode, done.stderr) == (
        1, f"capflow: cannot write the keys to {tmp_path / 'file' / 'keys'}: Not a "
           "directory\n")
    done = _keys("bot-1", "--dir", "/proc/capflow-keys")
    assert done.returncode == 1 and done.stderr.startswith(
        "capflow: cannot write the keys to /proc/capflow-keys: "), done.stderr
    assert done.stderr.count("\n") == 1
