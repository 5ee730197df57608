"""Producing contract events to Kafka: acks=all, idempotent producer, contract keys and headers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from realtime_gateway.ingest.kafka_config import KafkaConfig
from realtime_gateway.ingest.telemetry import IngestTelemetry
from realtime_gateway.tasks import stop_tasks

log = logging.getLogger(__name__)

CORRELATION_HEADER = "correlation-id"
TRACEPARENT_HEADER = "traceparent"


class KafkaUnavailable(RuntimeError):
    """The broker did not acknowledge in time; the caller answers with an error and may retry."""


def current_traceparent() -> str:
    """The active span's W3C traceparent, or a fresh root one so the header is always present."""
    try:
        from opentelemetry import propagate

        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        if carrier.get(TRACEPARENT_HEADER):
            return carrier[TRACEPARENT_HEADER]
    except Exception:  # tracing is optional for producing; never fail a send over it
        log.debug("no trace context to propagate", exc_info=True)
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def record_headers(correlation_id: str | None, traceparent: str | None = None) -> list[tuple[str, bytes]]:
    headers = [(TRACEPARENT_HEADER, (traceparent or current_traceparent()).encode())]
    if correlation_id:
        headers.insert(0, (CORRELATION_HEADER, correlation_id.encode()))
    return headers


class KafkaEventSink:
    """An :class:`~realtime_gateway.ingest.ports.EventSink` over one idempotent aiokafka producer.

    ``start`` retries in the background until the broker is reachable; sends before that, or
    while the broker is down, fail after ``send_timeout_s`` with :class:`KafkaUnavailable`.
    """

    def __init__(
        self, config: KafkaConfig, *, send_timeout_s: float = 10.0, telemetry: IngestTelemetry | None = None
    ) -> None:
        self._config = config
        self.telemetry = telemetry or IngestTelemetry()
        self._send_timeout_s = send_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self._started.is_set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect(), name="kafka-producer-connect")

    async def _connect(self) -> None:
        delay = 0.2
        while True:
            producer = AIOKafkaProducer(
                **self._config.client_kwargs(),
                acks="all",
                enable_idempotence=True,
                linger_ms=2,
                request_timeout_ms=int(self._send_timeout_s * 1000),
            )
            try:
                await producer.start()
            except Exception as exc:
                self.telemetry.error("connect")
                log.warning("kafka producer cannot connect (%s); retrying in %.1fs", exc, delay)
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._producer = producer
            self._started.set()
            log.info("kafka producer connected to %s", self._config.bootstrap_servers)
            return

    async def stop(self) -> None:
        if self._task is not None:
            await stop_tasks(self._task)
        if self._producer is not None:
            # Flushes what is in flight so acknowledged-to-client messages are really on the broker.
            await self._producer.stop()
            self._producer = None

    async def send(
        self,
        topic_key: str,
        key: str,
        envelope: Mapping[str, Any],
        *,
        correlation_id: str | None = None,
    ) -> None:
        try:
            await asyncio.wait_for(self._started.wait(), self._send_timeout_s)
        except TimeoutError:
            self.telemetry.error("produce")
            raise KafkaUnavailable("kafka producer is not connected") from None
        assert self._producer is not None
        topic = self._config.topic(topic_key)
        corr = correlation_id or envelope.get("correlationId")
        corr_text = str(corr) if corr else None
        # Inside the producer span, the traceparent header names it as the consumer's parent.
        with self.telemetry.produce_span(topic, corr_text):
            try:
                await asyncio.wait_for(
                    self._producer.send_and_wait(
                        topic,
                        value=orjson.dumps(dict(envelope)),
                        key=key.encode(),
                        headers=record_headers(corr_text),
                    ),
                    self._send_timeout_s,
                )
            except TimeoutError:
                self.telemetry.error("produce")
                raise KafkaUnavailable("kafka did not acknowledge in time") from None
            except Exception as exc:
                self.telemetry.error("produce")
                raise KafkaUnavailable(f"kafka send failed: {exc}") from exc
