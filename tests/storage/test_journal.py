"""The journal the actors write through (capflow.actors.model.journal, storage/journal.py)
and what opens it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from capflow.actors.model.errors import Denied


def test_storage_off_keeps_no_profile_its_account_had_no_cash_for(make_system):
    """A profile whose allocation the account cannot give is refused and not created:
    storage off, it is not listed either (it was, before it was written)."""
    system = make_system(storage={"durable": False})
    with pytest.raises(Denied) as refused:
        system.create_profile("big", "2000000")  # the paper account has 1,000,000
    assert refused.value.code == "INSUFFICIENT_CAPITAL"
    assert system.list_profiles() == []
    system.create_profile("small", "1000")
    assert [p.profile_id for p in system.list_profiles()] == ["small"]


#: the modules of capflow.actors that may import storage: the wiring (System opens it)
#: and the one configuration, which combines every owner's section
WIRING = {"system.py", "config.py"}


def test_the_actor_shells_reach_storage_only_through_the_journal():
    """No actor shell imports storage (to build a write request, name a table or read
    rows itself): they write through the journal's verbs and read through the stores
    the wiring hands them."""
    actors = Path(__file__).resolve().parents[2] / "actors"
    found = {}
    for path in sorted(actors.glob("*.py")):
        if path.name in WIRING:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found.setdefault(path.name, []).extend(
                n for n in names if n == "capflow.storage" or n.startswith("capflow.storage."))
    assert {k: v for k, v in found.items() if v} == {}
