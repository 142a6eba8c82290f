"""Persistence: opened by `storage.open.open_storage`, written through the journal
(storage/journal.py, the domain's `Journal`), read through the stores. Underneath:
SQLAlchemy Core tables, migrations, the rows of each write (storage/rows.py) and their SQL
(storage/statements.py), the group-commit writer, recovery, and the owner epoch that
lets one server at a time commit (storage/owner.py)."""
