"""The local PostgreSQL answers as the service role and keeps what it is given."""

from __future__ import annotations

import uuid

import sqlalchemy as sa


def test_select_one(db_engine: sa.Engine) -> None:
    with db_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1


def test_service_role_owns_a_writable_database(db_engine: sa.Engine) -> None:
    table = f"probe_{uuid.uuid4().hex[:8]}"
    with db_engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (id uuid PRIMARY KEY, body jsonb)"))
        conn.execute(
            sa.text(f"INSERT INTO {table} VALUES (:id, CAST(:body AS jsonb))"),
            {"id": uuid.uuid4(), "body": '{"status": "PENDING"}'},
        )
    try:
        with db_engine.connect() as conn:
            status = conn.execute(sa.text(f"SELECT body->>'status' FROM {table}")).scalar_one()
            version = conn.execute(sa.text("SHOW server_version_num")).scalar_one()
        assert status == "PENDING"
        assert int(version) >= 150000
    finally:
        with db_engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {table}"))
