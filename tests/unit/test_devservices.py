"""The launcher's prerequisite checks fail with one clear line, before touching anything; the
cluster id it formats the storage with is one the storage tool accepts."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from provisioning.devservices.kafka import LocalKafka, new_cluster_id
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


# A UUID whose URL-safe base64 begins with "-" (its first six bits are 62), then an ordinary one.
DASHED = uuid.UUID(bytes=b"\xf8" + bytes(15))
PLAIN = uuid.UUID(bytes=b"\x10" + bytes(15))


def test_a_cluster_id_never_begins_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # The storage tool read such an id as an option and the dev cluster did not start.
    drawn = iter([DASHED, DASHED, PLAIN])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(drawn))

    made = new_cluster_id()

    assert made == "EAAAAAAAAAAAAAAAAAAAAA"
    assert next(drawn, None) is None  # drawn again until it did not


def test_a_kept_cluster_id_that_begins_with_a_dash_is_replaced(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path, port=1, controller_port=2)
    (tmp_path / "cluster-id").write_text("-AAAAAAAAAAAAAAAAAAAAA\n")

    made = kafka._cluster_id()

    assert not made.startswith("-") and len(made) == 22
    assert (tmp_path / "cluster-id").read_text() == made
    assert kafka._cluster_id() == made  # kept from then on
