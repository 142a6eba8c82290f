"""Reading wire replies in tests: the result of an ok reply, the details of an error."""

from __future__ import annotations


def ok(reply: dict) -> dict:
    assert reply["v"] == 1 and reply["ok"] is True, reply
    return reply["result"]


def error(reply: dict, code: str) -> dict:
    assert reply["v"] == 1 and reply["ok"] is False, reply
    assert reply["error"]["code"] == code, reply
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
    assert isinstance(reply["error"]["details"], dict)
    return reply["error"]["details"]
