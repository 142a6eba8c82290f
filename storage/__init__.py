"""Persistence: SQLAlchemy Core tables, migrations, the group-commit writer, recovery."""
