"""Persistence: SQLAlchemy Core tables, migrations, the group-commit writer, recovery, and
the owner epoch that lets one server at a time commit (storage/owner.py)."""
