"""`capflow call` against a running server."""

from __future__ import annotations

import io
import json

from capflow import run


def test_call_prints_the_result_of_a_running_server(live, capsys):
    server = live()
    out = io.StringIO()
    args = run._parser().parse_args(["call", "profile.create", "profile_id=alpha",
                                     "allocated=250", "--endpoint", server.endpoint])
    assert run.call_command(server.system.config, args, out) == 0
    assert json.loads(out.getvalue())["ledger"]["available"] == "250.00"
    out = io.StringIO()
    args = run._parser().parse_args(["call", "ledger.get", "profile_id=ghost", "--endpoint",
                                     server.endpoint])
    assert run.call_command(server.system.config, args, out) == 1
    assert json.loads(out.getvalue())["error"]["code"] == "NOT_FOUND"


def test_call_refuses_an_argument_given_twice(live, capsys):
    server = live()
    assert run.main(["call", "profile.create", "profile_id=alpha", "allocated=250",
                     "--endpoint", server.endpoint]) == 0
    capsys.readouterr()
    code = run.main(["call", "ledger.withdraw", "profile_id=alpha", "amount=1",
                     "client_request_id=w-1", "amount=200", "--endpoint", server.endpoint])
    assert code == 2
    assert "'amount' is given twice" in capsys.readouterr().err
    args = run._parser().parse_args(["call", "ledger.get", "profile_id=alpha",
                                     "--endpoint", server.endpoint])
    out = io.StringIO()
    assert run.call_command(server.system.config, args, out) == 0
    assert json.loads(out.getvalue())["available"] == "250.00"  # nothing was withdrawn
