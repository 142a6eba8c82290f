"""The journal the actors write through (capflow.actors.model.journal, storage/journal.py)
and what opens it."""

from __future__ import annotations

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
