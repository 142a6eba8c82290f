"""Bring a database to the newest schema with Alembic, from code (no alembic.ini).

What an upgrade did is said in capflow's own words, one line per migration applied
(``storage: migration 0007 applied: account states and flattens``, the first line of its
docstring), nothing when there was none; Alembic's own stdlib log lines are left to
whoever configures the stdlib's logging.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from loguru import logger
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> list[str]:
    """Upgrade to `revision`; the revisions applied, oldest first. The migrations run
    in one transaction (storage/migrations/env.py): all of them are applied or none."""
    cfg = alembic_config(engine)
    before = current_revision(engine)
    command.upgrade(cfg, revision)
    after = current_revision(engine)
    if after == before:
        return []
    scripts = ScriptDirectory.from_config(cfg)
    applied = list(reversed(list(scripts.iterate_revisions(after, before))))
    for script in applied:
        logger.info("storage: migration {} applied: {}", script.revision, title(script))
    return [script.revision for script in applied]


def title(script: Script) -> str:
    """A migration's docstring's first line, as the end of a sentence."""
    first = script.doc.splitlines()[0].strip().rstrip(".") if script.doc else ""
    if first[:2].istitle():  # "Account states" -> "account states"; "OMS" stays
        first = first[0].lower() + first[1:]
    return first or "(no description)"


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
