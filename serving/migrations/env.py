"""Alembic's environment for the serving store. `serving.store` runs it with the connection it holds, inside
its transaction (`config.attributes["connection"]`): there is no alembic.ini to find. Alembic executes this
file to run migrations; it is not imported."""

from __future__ import annotations

from alembic import context

from serving import schema


def run() -> None:
    """Run the pending revisions on the connection serving.store holds (online mode only)."""
    context.configure(
        connection=context.config.attributes["connection"],
        target_metadata=schema.metadata,
        include_name=schema.include_name,  # the snapshot tables are data, not schema
        render_as_batch=True,  # SQLite alters a table by copying it; autogenerate writes batch operations
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
