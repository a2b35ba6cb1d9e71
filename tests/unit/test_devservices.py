"""The launcher's prerequisite checks fail with one clear line, before touching anything."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from provisioning.devservices.kafka import LocalKafka
from provisioning.devservices.process import DevServiceError, refuse_taken_port


def test_missing_java_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    kafka = LocalKafka(tmp_path / "kafka", port=1, controller_port=2)

    with pytest.raises(DevServiceError, match="java not found on PATH: install a Java 17"):
        kafka.start()


def test_taken_port_is_named_with_the_setting_to_change() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        with pytest.raises(DevServiceError) as error:
            refuse_taken_port(port, "Kafka", "PROVISIONING_DEV_KAFKA_PORT")

    assert str(error.value) == (
        f"port {port} for Kafka is taken by another process; "
        "free it or choose another with PROVISIONING_DEV_KAFKA_PORT"
    )
