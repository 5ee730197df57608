"""The Kafka consumer loop: at-least-once from the contract topics to the fan-out.

An offset is committed only after every record before it was handed to the dispatcher (which
emits to the fan-out); redeliveries are dropped by the dispatcher's eventId dedup. A malformed
record is logged with topic/partition/offset, counted and skipped, so it never blocks its
partition. A failing effect (Redis down) is retried with backoff, holding the partition, because
skipping it would lose the event. Broker unavailable at start or mid-run: retried with backoff,
``ready`` is False meanwhile, and the sockets are unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from realtime_gateway.ingest.dispatch import Dispatcher
from realtime_gateway.ingest.envelope import EnvelopeError, parse_event
from realtime_gateway.ingest.kafka_config import KafkaConfig
from realtime_gateway.ingest.producer import CORRELATION_HEADER
from realtime_gateway.ingest.telemetry import IngestTelemetry
from realtime_gateway.ingest.topics import ensure_topics

log = logging.getLogger(__name__)

CONSUMED_TOPIC_KEYS: Final = ("orderEvents", "porterEvents", "notificationEvents", "chatEvents")
_MAX_BACKOFF_S: Final = 5.0
# Exceptions other than lost connections are retried this often before the record is given up.
_MAX_EFFECT_ATTEMPTS: Final = 5


def _transient(exc: BaseException) -> bool:
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - redis is a dependency
        return isinstance(exc, OSError | TimeoutError)
    return isinstance(exc, OSError | TimeoutError | RedisConnectionError | RedisTimeoutError)


class KafkaIngest:
    def __init__(
        self,
        config: KafkaConfig,
        dispatcher: Dispatcher,
        *,
        topic_keys: Iterable[str] = CONSUMED_TOPIC_KEYS,
        health_interval_s: float = 2.0,
        telemetry: IngestTelemetry | None = None,
    ) -> None:
        self.telemetry = telemetry or IngestTelemetry()
        self._config = config
        self._dispatcher = dispatcher
        self._topics = [config.topic(k) for k in topic_keys]
        self._health_interval_s = health_interval_s
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._connected = False
        self._stopping = False
        self.errors = 0

    @property
    def ready(self) -> bool:
        return self._connected

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name="kafka-consume"),
            asyncio.create_task(self._health(), name="kafka-health"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            self._consumer = None
        self._connected = False

    async def lag(self) -> dict[tuple[str, int], int]:
        """Records behind the partition's high watermark, per assigned partition (for the metrics)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        lags: dict[tuple[str, int], int] = {}
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            with contextlib.suppress(Exception):
                position = await asyncio.wait_for(consumer.position(tp), 1.0)
                lags[(tp.topic, tp.partition)] = max(0, high - position)
        return lags

    # --- connection -------------------------------------------------------------------------

    async def _connect(self) -> AIOKafkaConsumer:
        delay = 0.2
        while True:
            consumer = AIOKafkaConsumer(
                *self._topics,
                **self._config.client_kwargs(),
                group_id=self._config.consumer_group,
                enable_auto_commit=False,
                auto_offset_reset=self._config.auto_offset_reset,
                max_poll_records=200,
            )
            try:
                if self._config.auto_create_topics:
                    await ensure_topics(self._config)
                await consumer.start()
            except Exception as exc:
                self.errors += 1
                self.telemetry.error("connect")
                log.warning("kafka consumer cannot connect (%s); retrying in %.1fs", exc, delay)
                with contextlib.suppress(Exception):
                    await consumer.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)
                continue
            log.info("kafka consumer joined group %s for %s", self._config.consumer_group, self._topics)
            return consumer

    async def _health(self) -> None:
        """Readiness follows whether the broker answers a metadata request."""
        while True:
            consumer = self._consumer
            ok = False
            if consumer is not None:
                try:
                    await asyncio.wait_for(consumer.topics(), timeout=max(1.0, self._health_interval_s))
                    ok = True
                except Exception as exc:
                    log.debug("kafka health probe failed: %s", exc)
            if ok != self._connected:
                log.info("kafka %s", "reachable" if ok else "unreachable")
            self._connected = ok
            if ok and self.telemetry.metrics is not None:
                self.telemetry.lag(await self.lag())
            await asyncio.sleep(self._health_interval_s)

    # --- consumption ------------------------------------------------------------------------

    async def _run(self) -> None:
        consumer = self._consumer = await self._connect()
        self._connected = True
        delay = 0.2
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=500)
                for tp, records in batch.items():
                    for record in records:
                        await self._process(record)
                    await self._commit(tp, records[-1].offset + 1)
                delay = 0.2
            except Exception as exc:
                # aiokafka reconnects by itself; back off so a dead broker does not spin the loop.
                # Anything else is logged and retried too: a dead loop would stop consumption silently.
                self.errors += 1
                self.telemetry.error("consume")
                if isinstance(exc, KafkaError):
                    log.warning("kafka consume failed (%s); retrying in %.1fs", exc, delay)
                else:
                    log.exception("kafka consume loop failed; retrying in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        assert self._consumer is not None
        try:
            await self._consumer.commit({tp: offset})
        except CommitFailedError as exc:
            self.telemetry.error("commit")
            # The partition moved to another instance; it re-reads from the last commit and the
            # dedup drops what this instance already delivered.
            log.info("commit of %s@%d skipped after a rebalance: %s", tp, offset, exc)

    async def _process(self, record: ConsumerRecord[Any, Any]) -> None:
        where = f"{record.topic}/{record.partition}@{record.offset}"
        try:
            event = parse_event(record.value)
        except EnvelopeError as exc:
            self._dispatcher.stats.count_malformed(record.topic)
            self.telemetry.record(record.topic, "malformed")
            log.warning("skipping malformed record %s: %s", where, exc.reason)
            return
        correlation = dict(record.headers or ()).get(CORRELATION_HEADER)
        correlation_id = (
            correlation.decode(errors="replace") if correlation else event.envelope.correlation_id
        )
        attempts = 0
        delay = 0.1
        while True:
            try:
                with self.telemetry.consume_span(
                    record.topic, record.partition, record.offset, record.headers, correlation_id
                ):
                    outcome = await self._dispatcher.handle(event)
                self.telemetry.record(record.topic, outcome.value)
                log.debug("%s %s %s: %s", where, event.type, event.event_id, outcome)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempts += 1
                if not _transient(exc) and attempts >= _MAX_EFFECT_ATTEMPTS:
                    self._dispatcher.stats.count_malformed(record.topic)
                    self.telemetry.record(record.topic, "failed")
                    log.exception(
                        "giving up on record %s (%s) after %d attempts", where, event.type, attempts
                    )
                    return
                log.warning("delivering %s (%s) failed: %r; retrying in %.1fs", where, event.type, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)
