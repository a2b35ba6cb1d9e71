"""`provisioning topics create` against the real broker."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from provisioning.errors import ConfigurationError
from provisioning.settings import Settings
from provisioning.topics import TopicLayout, create_topics, describe_configs


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PROVISIONING_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "PROVISIONING_TOPIC_PREFIX": settings.topic_prefix,
        "PROVISIONING_TOPIC_PARTITIONS": "3",
    }
    return subprocess.run(
        [sys.executable, "-m", "provisioning.cli", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )


def test_topics_create_twice_succeeds_and_state_is_compacted(
    kafka_admin: AdminClient, settings: Settings, layout: TopicLayout
) -> None:
    first = _cli(settings, "topics", "create")
    second = _cli(settings, "topics", "create")

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert f"created  {layout.state}" in first.stdout
    assert f"exists   {layout.state}" in second.stdout
    assert describe_configs(kafka_admin, layout.state)["cleanup.policy"] == "compact"
    assert describe_configs(kafka_admin, layout.events)["cleanup.policy"] == "delete"
    metadata = kafka_admin.list_topics(timeout=10)
    for spec in layout.specs(3):
        assert len(metadata.topics[spec.name].partitions) == 3


def test_refuses_when_copartitioned_topics_differ(
    kafka_admin: AdminClient, layout: TopicLayout
) -> None:
    kafka_admin.create_topics([NewTopic(layout.commands, num_partitions=2,
                                        replication_factor=1)])[layout.commands].result()

    with pytest.raises(ConfigurationError, match="same partition count"):
        create_topics(kafka_admin, layout.specs(partitions=3))

    existing = kafka_admin.list_topics(timeout=10).topics
    assert layout.state not in existing, "nothing is created when the layout is refused"


def test_cli_refusal_is_one_clear_line(
    kafka_admin: AdminClient, settings: Settings, layout: TopicLayout
) -> None:
    kafka_admin.create_topics([NewTopic(layout.step_replies, num_partitions=5,
                                        replication_factor=1)])[layout.step_replies].result()

    result = _cli(settings, "topics", "create")

    assert result.returncode == 2
    assert "same partition count" in result.stderr
    assert "Traceback" not in result.stderr
