"""Logging: `capflow serve` says what it does in one line per event (no Alembic internals,
no migration docstrings, no empty extras); an embedded System leaves its host's logging
alone and stays silent unless the host turns capflow's messages on."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from loguru import logger

import capflow
from capflow.actors.logs import LogConfig, setup_logging
from capflow.protocol.client import Client

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = sorted(p.name[:4] for p in (ROOT / "storage" / "migrations" / "versions")
                    .glob("[0-9][0-9][0-9][0-9]_*.py"))
#: a line as the human format starts it
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [A-Z]+ +\S+ ")


@pytest.fixture
def own_logging():
    """setup_logging takes the process's logging over (as the command line does): give
    the test run's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    logger.remove()
    logger.add(lambda msg: None, level="ERROR")
    root.handlers[:] = handlers
    root.setLevel(level)
    capflow.enable_logging()


def test_human_lines_carry_no_empty_extras_and_json_lines_keep_every_field(own_logging,
                                                                          capsys):
    setup_logging(LogConfig(level="INFO"))
    logger.info("nothing bound")
    logger.bind(account="paper").info("one bound")
    lines = capsys.readouterr().err.splitlines()
    [plain] = [line for line in lines if "nothing bound" in line]
    [bound] = [line for line in lines if "one bound" in line]
    assert STAMP.match(plain) and plain.endswith("nothing bound"), plain
    assert "'account': 'paper'" in bound, bound
    setup_logging(LogConfig(level="INFO", json=True))
    logger.info("nothing bound")
    logger.bind(account="paper").info("one bound")
    records = [json.loads(line)["record"] for line in capsys.readouterr().err.splitlines()]
    assert [(r["message"], r["extra"]) for r in records] == [
        ("nothing bound", {}), ("one bound", {"account": "paper"})]
    assert all({"time", "level", "name", "function", "line"} <= set(r) for r in records)


@pytest.mark.parametrize("level, shown", [
    ("INFO", {"warning"}), ("WARNING", {"warning"}), ("DEBUG", {"debug", "info", "warning"}),
])
def test_stdlib_loggers_come_through_at_warning_unless_the_level_asks_for_more(
        own_logging, capsys, level, shown):
    setup_logging(LogConfig(level=level))
    for name in ("alembic.runtime.migration", "sqlalchemy.engine", "pykka", "zmq.auth"):
        log = logging.getLogger(name)
        log.debug("%s debug", name)
        log.info("%s info", name)
        log.warning("%s warning", name)
    err = capsys.readouterr().err
    for name in ("alembic.runtime.migration", "sqlalchemy.engine", "pykka", "zmq.auth"):
        came = {what for what in ("debug", "info", "warning") if f"{name} {what}" in err}
        assert came == shown, (name, err)
    # each under the name of the stdlib logger it came from
    assert re.search(r"WARNING +alembic\.runtime\.migration alembic\.runtime\.migration "
                     r"warning$", err, re.M), err


def test_capflow_messages_turn_off_and_on_again(tmp_path):
    from capflow.storage.engine import open_engine
    from capflow.storage.migrate import upgrade

    said: list[str] = []
    sink = logger.add(lambda m: said.append(m.record["message"]), filter="capflow")
    engine = open_engine(f"sqlite:///{tmp_path}/c.db")
    try:
        capflow.disable_logging()
        upgrade(engine, "0001")
        assert said == []
        capflow.enable_logging()
        upgrade(engine, "0002")
        assert said == ["storage: migration 0002 applied: orders, positions and signals"]
    finally:
        capflow.enable_logging()  # as the test run has it
        logger.remove(sink)
        engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(cwd: Path, *options: str) -> list[str]:
    """`capflow serve` until it answers, then SIGINT: its stderr lines."""
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CAPFLOW_")},
           "CAPFLOW_STORAGE__URL": f"sqlite:///{cwd}/srv.db",
           "CAPFLOW_SERVER__ENDPOINT": endpoint,
           "CAPFLOW_SERVER__EVENTS_ENDPOINT": f"tcp://127.0.0.1:{_free_port()}"}
    proc = subprocess.Popen([sys.executable, "-m", "capflow.run", *options, "serve"],
                            cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        with Client(endpoint, timeout_s=0.5, retries=60) as c:
            assert c.health()["status"] == "ok"  # retries until the server is up
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    return err.splitlines()


def test_capflow_serve_starts_with_one_line_per_migration_and_no_alembic_internals(
        tmp_path):
    lines = _serve(tmp_path)
    assert lines and all(STAMP.match(line) for line in lines), "\n".join(lines)
    assert not [line for line in lines if "alembic" in line.lower()], "\n".join(lines)
    assert not [line for line in lines if line.endswith(" {}")], "\n".join(lines)
    applied = [re.search(r"storage: migration (\d{4}) applied: (.+)$", line)
               for line in lines if "migration" in line]
    assert [m.group(1) for m in applied if m] == MIGRATIONS, "\n".join(lines)
    assert "storage: migration 0007 applied: account states and flattens" in "\n".join(lines)
    assert any("capflow is running" in line for line in lines)
    assert any("capflow stopped" in line for line in lines)
    # started again: nothing to migrate, nothing said about it; JSON keeps its fields
    records = [json.loads(line)["record"] for line in _serve(tmp_path, "--json-logs")]
    assert not [r for r in records if "migration" in r["message"]], records
    assert any(r["message"].startswith("capflow is running") for r in records)
    assert {"account": "paper"} in [r["extra"] for r in records]


HOST = textwrap.dedent("""\
    import json, logging, sys, tempfile

    mode = sys.argv[1]
    if mode == "host":  # a host with logging of its own, stdlib and loguru
        logging.basicConfig(level=logging.INFO, format="HOST %(name)s: %(message)s")

    import capflow

    print(json.dumps({"loguru imported by capflow": "loguru" in sys.modules}), flush=True)
    if mode == "enabled":
        capflow.enable_logging()

    def stdlib():
        loggers = {"": logging.getLogger(), **logging.Logger.manager.loggerDict}
        return {name: (lg.level, [repr(h) for h in lg.handlers], lg.propagate, lg.disabled)
                for name, lg in loggers.items() if isinstance(lg, logging.Logger)}

    from loguru import logger

    # what these libraries set up for themselves when imported is theirs, not capflow's
    import alembic.command, pykka, sqlalchemy, zmq  # noqa: E401

    before = stdlib()
    with tempfile.TemporaryDirectory() as data:
        cfg = capflow.load_config(storage={"url": f"sqlite:///{data}/capflow.db"},
                                  oms={"audit_log": f"{data}/signals.jsonl"})
        with capflow.System(cfg) as cf:
            cf.create_profile("alpha", "10000")
    after = stdlib()
    if mode == "host":
        logging.getLogger("host").info("the host's own stdlib line")
        logger.info("the host's own loguru line")
    changed = sorted(n for n in before if before[n] != after[n])
    added = sorted(n for n in after if n not in before and after[n] != (0, [], True, False))
    print(json.dumps({"changed": changed, "added": added}), flush=True)
    """)


def _host(tmp_path: Path, mode: str) -> tuple[list[dict], list[str]]:
    script = tmp_path / "host.py"
    script.write_text(HOST)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPFLOW_", "LOGURU_"))}
    proc = subprocess.run([sys.executable, str(script), mode], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr.splitlines()


def test_an_embedded_system_is_silent_and_leaves_the_hosts_logging_alone(tmp_path):
    # a program that only embeds capflow: not a line on stderr
    (imported, untouched), err = _host(tmp_path, "plain")
    assert imported == {"loguru imported by capflow": False}  # `import capflow` stays light
    assert err == []
    assert untouched == {"changed": [], "added": []}
    # a host with its own logging: its lines, as it formats them; none of capflow's
    (_, untouched), err = _host(tmp_path, "host")
    assert untouched == {"changed": [], "added": []}
    assert "HOST host: the host's own stdlib line" in err, err
    [own] = [line for line in err if not line.startswith("HOST ")]
    assert own.endswith("the host's own loguru line"), err


def test_an_embedded_system_logs_once_the_host_enables_it(tmp_path):
    (imported, untouched), err = _host(tmp_path, "enabled")
    assert imported == {"loguru imported by capflow": False}
    assert untouched == {"changed": [], "added": []}
    text = "\n".join(err)
    assert "capflow started: 0 profiles" in text and "capflow stopped" in text, text
    assert "storage: migration 0001 applied: initial schema" in text, text
