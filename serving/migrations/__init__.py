"""Alembic migrations of the serving store (serving.schema): env.py and versions/, run by serving.store."""
