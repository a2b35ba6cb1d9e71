"""Fixtures on the real broker and database: connection checks, fresh topics and groups."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from confluent_kafka.admin import AdminClient
from topic_prefixes import of_this_session

from provisioning.database import upgrade
from provisioning.settings import Settings
from provisioning.topics import TopicLayout, create_topics

if TYPE_CHECKING:
    from secure_cluster import SecureCluster

QUIET = logging.getLogger("tests.kafka")
QUIET.setLevel(logging.CRITICAL)


@pytest.fixture(scope="session")
def kafka_admin(base_settings: Settings) -> Iterator[AdminClient]:
    """The broker's admin client; at the session's end it deletes the session's topics."""
    admin = AdminClient(base_settings.kafka_config(), logger=QUIET)
    try:
        brokers = admin.list_topics(timeout=10).brokers
    except Exception as exc:  # noqa: BLE001 - reported as a failure with a remedy
        pytest.fail(
            f"Kafka at {base_settings.kafka_bootstrap_servers} does not answer ({exc}); "
            "start it with `provisioning dev up` (make test does this)",
            pytrace=False,
        )
    assert brokers, "Kafka answered without brokers"
    yield admin
    delete_session_topics(admin)


def delete_session_topics(admin: AdminClient) -> None:
    """The topics of this session's tests (what is left is said, and fails nothing)."""
    try:
        names = of_this_session(admin.list_topics(timeout=30).topics)
        for start in range(0, len(names), 500):
            futures = admin.delete_topics(names[start:start + 500], operation_timeout=60)
            for future in futures.values():
                future.result(120)
    except Exception as exc:  # noqa: BLE001 - cleaning up; the tests' results stand
        print(f"\nsome test topics were not deleted: {exc}")


@pytest.fixture(scope="session")
def db_engine(base_settings: Settings) -> sa.Engine:
    engine = sa.create_engine(base_settings.database_url_plain(), pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL does not answer ({exc.orig}); "
            "start it with `provisioning dev up` (make test does this)",
            pytrace=False,
        )
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def migrated(db_engine: sa.Engine) -> sa.Engine:
    """The service database at the latest migration (every test's tables exist)."""
    upgrade(db_engine)
    return db_engine


@pytest.fixture
def layout(settings: Settings) -> TopicLayout:
    return TopicLayout(settings.topic_prefix)


@pytest.fixture
def topics(kafka_admin: AdminClient, settings: Settings, layout: TopicLayout) -> TopicLayout:
    """This test's own topics, created fresh."""
    create_topics(kafka_admin, layout.specs(settings.topic_partitions,
                                            max_command_bytes=settings.max_command_bytes))
    return layout


@pytest.fixture(autouse=True)
def no_stray_processes() -> Iterator[None]:
    """Kill what a test started and left running (its own stop is skipped when it fails).
    Processes of module fixtures were started before this fixture and are left alone."""
    from harness import STARTED

    before = len(STARTED)
    yield
    for process in STARTED[before:]:
        process.kill()
    del STARTED[before:]


@pytest.fixture
def group_id() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def secure_cluster(base_settings: Settings) -> Iterator[SecureCluster]:
    """Three Kafka nodes with TLS, SASL/SCRAM and ACLs (`tests/secure_cluster.py`), started
    for the first test that asks, stopped at the end of the session."""
    from secure_cluster import start_secure_cluster

    cluster = start_secure_cluster(base_settings.database_url_plain())
    yield cluster
    cluster.close()
