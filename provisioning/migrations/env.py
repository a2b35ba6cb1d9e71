"""Alembic environment, driven from `provisioning.database` (no alembic.ini).

`provisioning.database.upgrade` opens the connection, takes the migration lock and hands the
connection over in `config.attributes["connection"]`; the migrations run inside that
connection's transaction, so a failed upgrade leaves nothing half-done (PostgreSQL DDL is
transactional). Without a connection (e.g. `--sql` offline mode) the URL option is used.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

config = context.config

# Revisions are written by hand; a test compares the migrated schema with the models.
target_metadata = None


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    if context.is_offline_mode():
        run_offline()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        run_online(connection)
        return
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"), poolclass=sa.NullPool)
    with engine.begin() as own_connection:
        run_online(own_connection)
    engine.dispose()


main()
