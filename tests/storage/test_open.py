"""`open_storage` (storage/open.py): storage opened at the edge, handed to a `System`,
closed by whoever opened it; a failed open keeps nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from capflow.actors.config import load_config
from capflow.actors.model.errors import Unavailable
from capflow.actors.system import System
from capflow.storage.engine import OwnerLock, open_engine
from capflow.storage.open import open_storage


def _config(url: str, **storage):
    folder = url.removeprefix("sqlite:///").rsplit("/", 1)[0]
    return load_config(env={}, storage={"url": url, **storage}, simulator={"mode": "step"},
                       oms={"audit_log": f"{folder}/signals.jsonl"})


def test_a_system_runs_on_storage_its_embedder_opened_and_leaves_it_open(tmp_path):
    cfg = _config(f"sqlite:///{tmp_path}/capflow.db")
    storage = open_storage(cfg.storage, places=cfg.places)
    try:
        assert storage.durable and storage.epoch == 1
        with pytest.raises(Unavailable):  # it owns the database while open
            open_storage(cfg.storage, places=cfg.places, lock_wait_s=0)
        with System(cfg, storage=storage) as cf:
            cf.create_profile("alpha", "1000")
            assert cf.journal is storage.journal and cf.store is storage.ledger_store
            assert cf.writer is storage.writer
        # stopped, the System closed nothing it did not open: the same storage serves on
        with System(cfg, storage=storage) as cf:
            assert cf.ledger("alpha").allocated == Decimal("1000.00")
    finally:
        storage.close()
    storage.close()  # once more: nothing left to close
    again = open_storage(cfg.storage, places=cfg.places, lock_wait_s=0)
    try:
        assert again.epoch == 2  # the next owner
        assert again.ledger_store.snapshots()["alpha"].allocated == Decimal("1000.00")
    finally:
        again.close()


def test_storage_off_opens_a_journal_that_keeps_nothing(tmp_path):
    cfg = _config(f"sqlite:///{tmp_path}/never.db", durable=False)
    storage = open_storage(cfg.storage, places=cfg.places)
    assert not storage.durable and storage.engine is None and storage.oms_store is None
    with System(cfg, storage=storage) as cf:
        cf.create_profile("alpha", "1000")
        assert cf.available("alpha") == Decimal("1000.00")
    storage.close()
    assert not (tmp_path / "never.db").exists()


def test_an_open_that_fails_half_way_releases_what_it_took(tmp_path):
    """The owner lock is taken and the writer started before the migrations run: when
    they fail (not a database), both are released, so the next open is not refused."""
    path = tmp_path / "capflow.db"
    path.write_bytes(b"this is not a database" * 100)
    cfg = _config(f"sqlite:///{path}", writer="thread")
    with pytest.raises(Exception, match="not a database"):
        open_storage(cfg.storage, places=cfg.places)
    engine = open_engine(cfg.storage.url)
    try:
        OwnerLock(engine).acquire().release()  # free again
    finally:
        engine.dispose()
