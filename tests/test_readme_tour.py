"""The README's five-minute tour, run as written against a real `capflow serve`.

The tour's shell block is read from README.md itself, so the commands a newcomer copies
are the ones tested; only ``cf=.venv/bin/capflow`` points at this environment's command
and each ``sleep`` becomes a wait for what it waits for (a fill), so a slow machine does
not make the tour look broken.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from capflow.protocol.client import Client

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tour_block() -> list[str]:
    """The README's shell block that starts with ``cf=.venv/bin/capflow``, line by line."""
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    [block] = [b for b in blocks if b.startswith("cf=.venv/bin/capflow\n")]
    return [line for line in block.splitlines() if line.strip()]


def _command() -> str:
    exe = Path(sys.executable).parent / "capflow"
    return str(exe) if exe.exists() else f"{sys.executable} -m capflow.run"


def _strip_comment(line: str) -> str:
    # the tour's comments follow two or more spaces and a '#'; no argument holds one
    return re.split(r"\s{2,}#", line, maxsplit=1)[0].strip()


def test_the_tour_block_is_what_the_readme_promises():
    lines = [_strip_comment(line) for line in tour_block()]
    assert lines[0] == "cf=.venv/bin/capflow"
    assert any(line.startswith("$cf call signal.submit") for line in lines)
    assert any(line.startswith("$cf flatten") for line in lines)
    assert sum(line.startswith("sleep ") for line in lines) == 2


@pytest.fixture
def server(tmp_path):
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPFLOW_")}
    env.update({"CAPFLOW_SERVER__ENDPOINT": endpoint,
                "CAPFLOW_SERVER__EVENTS_ENDPOINT": f"tcp://127.0.0.1:{_free_port()}",
                "CAPFLOW_LOG__LEVEL": "WARNING"})
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 -- closed below
    proc = subprocess.Popen([*_command().split(), "serve"], cwd=tmp_path, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        with Client(endpoint, timeout_s=0.5, retries=40) as c:
            assert c.health()["status"] == "ok"  # retries until the server is up
        yield endpoint, env, tmp_path
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _wait_for(endpoint: str, check, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    with Client(endpoint, timeout_s=2, retries=0) as c:
        while True:
            positions = c.call("position.list", profile_id="alpha")["positions"]
            if check(positions):
                return
            assert time.monotonic() < deadline, f"{what} did not happen: {positions}"
            time.sleep(0.1)


def test_the_readme_tour_runs_as_written(server):
    endpoint, env, cwd = server
    assert shutil.which("bash"), "the tour is a bash block"
    outputs: list[tuple[str, str]] = []
    waits = iter([
        (lambda ps: any(p["status"] == "OPEN" for p in ps), "the entry's fill"),
        (lambda ps: ps and all(p["status"] == "CLOSED" for p in ps), "the flatten's close"),
    ])
    for line in tour_block()[1:]:
        command = _strip_comment(line)
        if command.startswith("sleep "):
            check, what = next(waits)
            _wait_for(endpoint, check, what)
            continue
        script = f"cf={_command()}\n{command}\n"
        done = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, timeout=60,
                              capture_output=True, text=True)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        outputs.append((command, done.stdout))

    by_op = {cmd.split()[2] if cmd.startswith("$cf call") else cmd.split()[1]: out
             for cmd, out in outputs}
    assert json.loads(by_op["system.health"])["status"] == "ok"
    # the configured opening price answers at once (no NOT_FOUND before the first tick);
    # the simulator may have ticked once or twice since, on a busy machine
    price = json.loads(by_op["market.price"])
    assert price["symbol"] == "BTCUSDT" and abs(Decimal(price["last"]) - 65000) < 650, price
    quote = json.loads(by_op["allocation.quote"])
    assert Decimal(quote["max_investable"]) > 0 and quote["reasoning"]
    signal = json.loads(by_op["signal.submit"])
    assert signal["risk_ok"] is True and signal["order_id"] and signal["qty"] == "0.01"
    [pos] = json.loads(by_op["position.list"])["positions"]
    assert pos["symbol"] == "BTCUSDT" and pos["tp_price"] and pos["sl_price"]
    assert "HALTED" in by_op["flatten"] and "1 position(s) asked to close" in \
        by_op["flatten"] and pos["position_id"] in by_op["flatten"], by_op["flatten"]
    assert re.search(r"closed_positions\s+1\n", by_op["stats"]), by_op["stats"]
    png = cwd / "reports" / "alpha.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Client(endpoint, timeout_s=2, retries=0) as c:
        stats = c.call("stats.get", profile_id="alpha")
        ledger = c.call("ledger.get", profile_id="alpha")
        profile = c.call("profile.get", profile_id="alpha")
    assert (stats["closed_positions"], stats["open_positions"]) == (1, 0)
    assert Decimal(ledger["reserved_for_positions"]) == 0
    assert Decimal(ledger["fees"]) > 0
    assert profile["state"] == "ACTIVE"  # the tour's last command lifted the halt
