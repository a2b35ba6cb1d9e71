"""Least privilege in PostgreSQL: the roles migration 0003 creates, tried with real logins."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa


@pytest.fixture
def login_as(migrated: sa.Engine) -> Iterator:
    made: list[tuple[str, sa.Engine]] = []

    def login(group: str) -> sa.Engine:
        name, password = f"t_{group}_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        with migrated.begin() as conn:
            conn.execute(sa.text(f"CREATE ROLE {name} LOGIN PASSWORD '{password}' "
                                 f"IN ROLE {group}"))
        url = migrated.url.set(username=name, password=password)
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        made.append((name, engine))
        return engine

    yield login
    for name, engine in made:
        engine.dispose()
        with migrated.begin() as conn:
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {name}"))


def denied(engine: sa.Engine, sql: str) -> bool:
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(sql))
    except sa.exc.ProgrammingError as exc:
        return any(m in str(exc.orig) for m in ("permission denied", "must be owner"))
    return False


def test_the_reader_sees_the_projection_only_and_changes_nothing(login_as) -> None:
    reader = login_as("provisioning_reader")
    with reader.connect() as conn:
        conn.execute(sa.text("SELECT count(*) FROM provisioning_requests")).scalar_one()
        conn.execute(sa.text("SELECT * FROM provisioning_stuck_requests LIMIT 1")).all()
        conn.execute(sa.text("SELECT * FROM provisioning_recent_failures LIMIT 1")).all()
    assert denied(reader, "DELETE FROM provisioning_events")
    assert denied(reader, "SELECT * FROM tenants LIMIT 1")
    assert denied(reader, "SELECT * FROM billing_accounts LIMIT 1")


def test_the_writer_reads_and_writes_rows_but_changes_no_schema(login_as) -> None:
    writer = login_as("provisioning_writer")
    with writer.connect() as conn:
        conn.execute(sa.text("SELECT count(*) FROM tenants")).scalar_one()
        conn.execute(sa.text("SELECT count(*) FROM provisioning_events")).scalar_one()
    assert denied(writer, "CREATE TABLE intruder (id int)")
    assert denied(writer, "DROP TABLE tenants")
    assert denied(writer, "ALTER TABLE provisioning_requests ADD COLUMN x int")
