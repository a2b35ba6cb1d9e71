"""The service's PostgreSQL: engines, and the Alembic migrations run from code.

`upgrade` needs no alembic.ini: the script location is the `migrations` folder installed with
this package. Each upgrade runs in one transaction holding a PostgreSQL advisory lock, so
processes that start together (several workers, a Helm job and a CLI) take turns: the first
migrates, the others then find the database at head and do nothing.

Every function takes a `Target`: the Settings, a database URL, or an existing Engine (which is
used as is and not disposed). `schema` confines migrations to one schema (created if missing)
by putting it alone on the search path; tests use it to migrate a throwaway schema up and down.
Alembic is imported by the functions that migrate, not here: the worker, projector and API
only make engines, and each of their processes would load it at start for nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from provisioning.errors import TransientError
from provisioning.settings import Settings

if TYPE_CHECKING:
    from alembic.config import Config

# Constraint and index names every model and migration uses, so a migration can name what it
# drops and a test can compare the two.
NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}

Target = Settings | str | sa.URL | sa.Engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Key of the advisory lock that serialises migrations (any constant works; this spells "prov").
MIGRATION_LOCK_KEY = 0x70726F76


def database_url(target: Settings | str | sa.URL) -> str | sa.URL:
    return target.database_url_plain() if isinstance(target, Settings) else target


def create_engine(
    target: Settings | str | sa.URL,
    *,
    pool_size: int = 10,
    max_overflow: int = 20,
    connect_timeout_s: int = 5,
    pre_ping: bool = True,
    **options: object,
) -> sa.Engine:
    """A pooled, thread-safe engine (psycopg 3). With `pre_ping`, connections are checked
    (one round trip) before each use; without, a connection lost since its last use fails the
    statement, and that invalidates every pooled connection made before it."""
    return sa.create_engine(
        database_url(target),
        pool_pre_ping=pre_ping,
        pool_size=pool_size,
        max_overflow=max_overflow,
        connect_args={"connect_timeout": connect_timeout_s},
        **options,
    )


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, f"no migrations in {MIGRATIONS_DIR}"
    return head


def upgrade(target: Target, revision: str = "head", *, schema: str | None = None) -> None:
    """Migrate up to `revision`; a database already there is left alone."""
    from alembic import command

    with _locked_connection(target, schema) as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(target: Target, revision: str, *, schema: str | None = None) -> None:
    """Migrate down to `revision` ("base" removes every table the migrations made)."""
    from alembic import command

    with _locked_connection(target, schema) as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def current_revision(target: Target, *, schema: str | None = None) -> str | None:
    """The revision the database is at, or None before the first migration."""
    from alembic.runtime.migration import MigrationContext

    with _engine(target) as engine, engine.begin() as connection:
        if schema is not None:
            _set_search_path(connection, schema)
        return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _locked_connection(target: Target, schema: str | None) -> Iterator[sa.Connection]:
    with _engine(target) as engine, engine.begin() as connection:
        # Held until this transaction ends: a concurrent upgrade waits, then sees our result.
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
        if schema is not None:
            quoted = connection.dialect.identifier_preparer.quote(schema)
            connection.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {quoted}"))
            _set_search_path(connection, schema)
        yield connection


@contextmanager
def _engine(target: Target) -> Iterator[sa.Engine]:
    """The caller's engine, or a single-connection one made (and disposed) for this call."""
    if isinstance(target, sa.Engine):
        engine, owned = target, False
    else:
        engine, owned = sa.create_engine(database_url(target), poolclass=sa.NullPool), True
    try:
        yield engine
    except sa.exc.OperationalError as exc:
        raise TransientError(f"database unavailable: {exc.orig or exc}") from exc
    finally:
        if owned:
            engine.dispose()


def _set_search_path(connection: sa.Connection, schema: str) -> None:
    quoted = connection.dialect.identifier_preparer.quote(schema)
    # LOCAL: ends with the transaction, so a pooled connection goes back unchanged.
    connection.execute(sa.text(f"SET LOCAL search_path TO {quoted}"))


def database_answers(engine: sa.Engine) -> bool:
    """Does the database answer a trivial query? (readiness of the projector and the API)"""
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError:
        return False
    return True
