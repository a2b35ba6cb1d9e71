"""Commands from HTTP requests onto the commands topic, without a flush per request.

Each request awaits its own delivery report (so a 202 means the command is durably on the
topic), while one background thread serves the producer's callbacks; concurrent requests share
librdkafka's batches instead of flushing one message at a time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from producers.commands import PublishError, command_producer_config
from provisioning.errors import TransientError
from provisioning.kafka_access import KafkaAccessDenied, denial
from provisioning.settings import Settings
from provisioning.topics import TopicLayout
from schemas import codec

log = logging.getLogger("provisioning.api")


class AsyncCommandPublisher:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = TopicLayout(settings.topic_prefix).commands
        self._refused: KafkaAccessDenied | None = None  # the login, by the error callback
        self._producer = Producer({**command_producer_config(settings), "linger.ms": 2},
                                  logger=log)
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._serve_callbacks, name="command-delivery",
                                        daemon=True)
        self._poller.start()

    async def publish(self, record_name: str, command: Mapping[str, Any],
                      traceparent: str | None = None, timeout_s: float = 15.0) -> None:
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[None] = loop.create_future()

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            refused = denial(error, self._settings, "Write", topic=self._topic)
            if refused is not None:
                log.error("%s", refused)
            loop.call_soon_threadsafe(_settle, delivered, refused or error)

        if self._refused is not None:
            raise self._refused
        request_id = str(command["requestId"])
        try:
            self._producer.produce(
                self._topic, key=request_id.encode(), value=codec.encode(record_name, command),
                headers=codec.headers_for(record_name, traceparent), on_delivery=on_delivery,
            )
        except BufferError:
            raise TransientError("too many commands waiting for delivery; try again") from None
        try:
            await asyncio.wait_for(delivered, timeout_s)
        except TimeoutError:
            raise TransientError(f"the command was not confirmed within {timeout_s} s") from None

    def close(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        self._poller.join(timeout=2)
        self._producer.flush(timeout_s)

    def _serve_callbacks(self) -> None:
        while not self._stopping.is_set():
            try:
                self._producer.poll(0.1)
            except KafkaAccessDenied as refused:  # the login: every publish fails from now
                log.error("%s", refused)
                self._refused = refused


def _settle(delivered: asyncio.Future[None], error: KafkaError | Exception | None) -> None:
    if delivered.done():
        return
    if isinstance(error, KafkaAccessDenied):
        delivered.set_exception(error)
    elif error is None:
        delivered.set_result(None)
    elif error.retriable():
        delivered.set_exception(TransientError(f"command not delivered: {error.str()}"))
    else:
        delivered.set_exception(PublishError(f"command not delivered: {error.str()}"))
