"""Every example a newcomer copies besides the tour does what it says on a fresh
`capflow serve` with the defaults: the README's "Talking to the server" block, run as
written, and the example of each op in `capflow call --help`, run one after the other.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time

import pytest

from capflow import run
from capflow.protocol.client import Client
from capflow.protocol.ops import OPS

from .test_readme_tour import README, _command
from .test_readme_tour import server as server  # the fixture: a real `capflow serve`


def talking_block() -> list[str]:
    """The README's shell block of "Talking to the server", line by line."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Talking to the server", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_the_talking_to_the_server_block_runs_as_written(server):
    """Before, its reservation of 500 left the signal's 650 over the 10 % ticker limit:
    'not traded: MAX_TICKER', with exit status 0 and nothing traded."""
    _, env, cwd = server
    answers = {}
    for line in talking_block():
        command = re.split(r"\s{2,}#", line, maxsplit=1)[0].strip()
        if " events " in f" {command} ":
            continue  # the event stream runs until Ctrl-C (tests/protocol/test_cli.py)
        script = command.replace(".venv/bin/capflow", _command(), 1)
        done = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, timeout=60,
                              capture_output=True, text=True)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        answers[command.split()[2]] = done.stdout
    signal = json.loads(answers["signal.submit"])
    assert signal["risk_ok"] is True and signal["order_id"], signal
    assert "allowed" in answers["risk.check"]


def test_each_call_help_example_does_what_it_says_on_a_fresh_server(server, capsys,
                                                                   monkeypatch):
    """One after the other, in the order of the help; an id in an example stands for
    one an earlier example made. Before: a halt that refused every later trade, one
    idempotency key for a deposit and a withdrawal (CONFLICT), and a signal with no
    size (INSUFFICIENT_CAPITAL)."""
    endpoint = server[0]
    with pytest.raises(SystemExit):
        run.main(["call", "--help"])
    text = capsys.readouterr().out
    lines = [shlex.split(line, comments=True) for line in text.splitlines()
             if line.strip().startswith("capflow call ")]
    assert [words[2] for words in lines] == list(OPS)
    made: dict[str, str] = {}
    for words in lines:
        op, args = words[2], words[3:]
        for i, arg in enumerate(args):
            key = arg.partition("=")[0]
            if key in ("reservation_id", "order_id", "position_id"):
                if key == "position_id":
                    made[key] = _open_position(endpoint)
                args[i] = f"{key}={made[key]}"
        code = run.main(["call", op, *args, "--endpoint", endpoint, "--json"])
        got = capsys.readouterr()
        if op == "liquidity.set":  # the help says what it needs: a push provider
            assert code == 2 and "provider = 'push'" in got.out, got  # CONFLICT
            continue
        if op == "account.reconcile":  # a paper account has no venue to reconcile with
            assert code == 2 and "CONFLICT" in got.out, got  # refused: exit 2
            continue
        assert code == 0, (op, args, got.out, got.err)
        result = json.loads(got.out)
        if op == "allocation.reserve":
            made["reservation_id"] = result["reservation_id"]
        elif op == "order.submit":
            made["order_id"] = result["order_id"]
        elif op == "signal.submit":
            assert result["risk_ok"] is True, result
        elif op == "order.cancel":
            assert result["status"] == "CANCELED", result


def _open_position(endpoint: str) -> str:
    """The id of the signal's position once its entry filled (on the next tick)."""
    deadline = time.monotonic() + 30
    with Client(endpoint, timeout_s=2, retries=0) as c:
        while True:
            opened = c.call("position.list", profile_id="alpha", status="OPEN")["positions"]
            if opened:
                return opened[0]["position_id"]
            assert time.monotonic() < deadline, "the signal's entry did not fill"
            time.sleep(0.1)
