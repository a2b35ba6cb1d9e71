"""Migrations on the real PostgreSQL: idempotent upgrades, a full downgrade and upgrade, two
processes upgrading at once, and models that say exactly what the migrations create.

The service role may not create databases (no CREATEDB), so the down-and-up cycle runs in a
throwaway schema of the service database, which `upgrade(..., schema=...)` migrates alone.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from consumer.participants.builtin.models import Base
from projection.models import metadata as projection_metadata
from provisioning.database import (
    NAMING_CONVENTION,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from provisioning.settings import Settings

# Everything the migrations create, as the models declare it.
ALL_MODELS = sa.MetaData(naming_convention=NAMING_CONVENTION)
for _table in (*Base.metadata.tables.values(), *projection_metadata.tables.values()):
    _table.to_metadata(ALL_MODELS)
OPERATOR_VIEWS = {"provisioning_recent_failures", "provisioning_durations",
                  "provisioning_stuck_requests", "provisioning_needs_attention"}

REFERENCE_TABLES = ("sla_tiers", "plans", "services", "plan_services", "sla_quotas", "roles",
                    "role_permissions")
UPGRADE_IN_SCHEMA = (
    "import sys; from provisioning.database import upgrade; "
    "upgrade(sys.argv[1], schema=sys.argv[2])"
)


@pytest.fixture
def scratch_schema(registry_engine: sa.Engine) -> Iterator[str]:
    name = f"migration_test_{uuid.uuid4().hex[:10]}"
    yield name
    with registry_engine.begin() as connection:
        connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))


def test_the_service_database_is_at_head_and_upgrading_again_changes_nothing(
    registry_engine: sa.Engine,
) -> None:
    before = _reference_counts(registry_engine)

    upgrade(registry_engine)

    assert current_revision(registry_engine) == head_revision()
    assert _reference_counts(registry_engine) == before
    assert before["plans"] == 4 and before["sla_quotas"] == 12


def test_downgrade_to_base_then_upgrade_again(
    base_settings: Settings, registry_engine: sa.Engine, scratch_schema: str
) -> None:
    url = base_settings.database_url_plain()
    upgrade(url, schema=scratch_schema)
    assert current_revision(url, schema=scratch_schema) == head_revision()

    downgrade(url, "base", schema=scratch_schema)
    assert current_revision(url, schema=scratch_schema) is None
    assert _tables_in(registry_engine, scratch_schema) == {"alembic_version"}

    upgrade(url, schema=scratch_schema)
    assert current_revision(url, schema=scratch_schema) == head_revision()
    assert _tables_in(registry_engine, scratch_schema) == set(ALL_MODELS.tables) | {
        "alembic_version"
    }
    assert _views_in(registry_engine, scratch_schema) == OPERATOR_VIEWS
    assert _reference_counts(registry_engine, scratch_schema) == _reference_counts(registry_engine)


def test_two_processes_upgrading_at_once_take_turns(
    base_settings: Settings, registry_engine: sa.Engine, scratch_schema: str
) -> None:
    url = base_settings.database_url_plain()
    processes = [
        subprocess.Popen([sys.executable, "-c", UPGRADE_IN_SCHEMA, url, scratch_schema],
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    errors = [process.communicate(timeout=120)[1] for process in processes]

    assert [process.returncode for process in processes] == [0, 0], errors
    assert current_revision(url, schema=scratch_schema) == head_revision()
    assert _reference_counts(registry_engine, scratch_schema)["plans"] == 4


def test_the_models_describe_exactly_what_the_migrations_create(
    registry_engine: sa.Engine, scratch_schema: str
) -> None:
    upgrade(registry_engine, schema=scratch_schema)

    with registry_engine.begin() as connection:
        connection.execute(sa.text(f'SET LOCAL search_path TO "{scratch_schema}"'))
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, ALL_MODELS) == []
    assert _constraint_and_index_names(registry_engine, scratch_schema) == _declared_names()


def _reference_counts(engine: sa.Engine, schema: str | None = None) -> dict[str, int]:
    prefix = f'"{schema}".' if schema else ""
    with engine.connect() as connection:
        return {
            table: connection.scalar(sa.text(f"SELECT count(*) FROM {prefix}{table}"))
            for table in REFERENCE_TABLES
        }


def _tables_in(engine: sa.Engine, schema: str) -> set[str]:
    with engine.connect() as connection:
        return set(sa.inspect(connection).get_table_names(schema=schema))


def _views_in(engine: sa.Engine, schema: str) -> set[str]:
    with engine.connect() as connection:
        return set(sa.inspect(connection).get_view_names(schema=schema))


def _constraint_and_index_names(engine: sa.Engine, schema: str) -> set[str]:
    query = sa.text(
        "SELECT conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
        " WHERE n.nspname = :schema AND c.contype IN ('p', 'f', 'u', 'c')"
        " UNION SELECT indexname FROM pg_indexes WHERE schemaname = :schema"
    )
    with engine.connect() as connection:
        names = set(connection.scalars(query, {"schema": schema}))
    return names - {"alembic_version_pkc"}


def _declared_names() -> set[str]:
    names = set()
    for table in ALL_MODELS.tables.values():
        names |= {str(constraint.name) for constraint in table.constraints}
        names |= {str(index.name) for index in table.indexes}
    return names
