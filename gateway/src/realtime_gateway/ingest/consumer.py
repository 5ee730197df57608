"""The Kafka consumer loop: at-least-once from the contract topics to the fan-out, in batches.

Each batch is handled as a whole: the records are parsed, the eventIds that need a claim are
claimed in one round trip (the dispatcher's dedup), and the events run grouped by record key:
one key's events one after another in offset order (the contract keys by order id, so an order's
events reach clients in produce order), different keys concurrently, so their store and history
writes share round trips. A key whose events are all order-room-only, while emits go out in call
order (the Redis history), is started without a task or coroutine per event: its emits join the
history's next script call in offset order and the batch waits for their futures.

Offsets are committed once per batch, after every record of it was handed to the dispatcher
(which emits to the fan-out), so a committed offset never passes an undelivered record; the
commit runs in the background while the next batch is processed.
Redeliveries are dropped by the eventId dedup.

Records are fetched while a batch is delivered: librdkafka fetches ahead and the reader, polling
its queue from the loop, hands them over as they arrive (``reader.py``); they make the next
batch. The reader parks while ``MAX_BATCH_RECORDS`` wait, and pauses its partitions if they wait
for long, so a stuck batch holds records at the broker, not in memory.

A malformed record is logged with topic/partition/offset, counted and skipped, so it never blocks
its partition. A failing effect (Redis down) is retried with backoff, holding the batch (and so
its partition), because skipping it would lose the event; a key's later events wait for it.
Broker unavailable at start or mid-run: retried with backoff, ``ready`` is False meanwhile, and
the sockets are unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Final

from confluent_kafka import KafkaError, KafkaException

from realtime_gateway.ingest.dispatch import Dispatcher
from realtime_gateway.ingest.envelope import EnvelopeError, Event, parse_event
from realtime_gateway.ingest.kafka_config import KafkaConfig
from realtime_gateway.ingest.ports import Emitted
from realtime_gateway.ingest.producer import CORRELATION_HEADER
from realtime_gateway.ingest.reader import TP, CommitSkipped, Record, RecordReader
from realtime_gateway.ingest.telemetry import IngestTelemetry
from realtime_gateway.ingest.topics import ensure_topics
from realtime_gateway.tasks import stop_tasks

log = logging.getLogger(__name__)

CONSUMED_TOPIC_KEYS: Final = ("orderEvents", "porterEvents", "notificationEvents", "chatEvents")
_MAX_BACKOFF_S: Final = 5.0
# Exceptions other than lost connections are retried this often before the record is given up.
_MAX_EFFECT_ATTEMPTS: Final = 5
# Records per batch: enough to amortise the round trips under load; a batch's first record waits
# for the whole batch, so not more.
MAX_BATCH_RECORDS: Final = 500
# At most one offset commit per this interval: a commit per small batch cost the gateway and the
# broker more than the batch itself; a later commit only means a little more to re-read (and drop
# as duplicates) after a crash.
COMMIT_INTERVAL_S: Final = 0.2
# How long ``stop`` lets the batch in hand finish before cancelling it.
STOP_GRACE_S: Final = 5.0


def _transient(exc: BaseException) -> bool:
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - redis is a dependency
        return isinstance(exc, OSError | TimeoutError)
    return isinstance(exc, OSError | TimeoutError | RedisConnectionError | RedisTimeoutError)


@dataclass(slots=True)
class _Item:
    """One well-formed record of a batch, until it is delivered (or given up)."""

    record: Record
    event: Event
    correlation_id: str | None
    group: Hashable
    attempts: int = 0
    error: BaseException | None = None
    finished: bool = False

    @property
    def where(self) -> str:
        r = self.record
        return f"{r.topic}/{r.partition}@{r.offset}"


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
        self._reader: RecordReader | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Readiness as last logged by ``_health``.
        self._was_ready = False
        self._stopping = False
        # Offsets delivered but not yet committed, and the task committing them.
        self._to_commit: dict[TP, int] = {}
        self._committer: asyncio.Task[None] | None = None
        self._last_commit = 0.0
        # Outcomes of the batch in hand, per (topic, result), recorded when it is done.
        self._counts: Counter[tuple[str, str]] = Counter()
        # Clear while a batch is being delivered.
        self._idle = asyncio.Event()
        self._idle.set()
        # Records fetched ahead of the batch in hand, per partition in offset order; ``_ahead_set``
        # when there are some.
        self._ahead: dict[TP, list[Record]] = {}
        self._ahead_count = 0
        self._ahead_set = asyncio.Event()
        self.errors = 0

    @property
    def ready(self) -> bool:
        """In the group, with a connection up to a broker (librdkafka's own view, kept live)."""
        reader = self._reader
        return reader is not None and reader.consuming

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name="kafka-consume"),
            asyncio.create_task(self._health(), name="kafka-health"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        # The batch in hand is finished first (bounded): cancelling it halfway would leave events
        # claimed but undelivered, and redeliveries dropped as duplicates.
        if self._tasks and not self._idle.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), STOP_GRACE_S)
        await stop_tasks(*self._tasks)
        self._tasks = []
        if self._reader is not None:
            # The records read ahead are left to whoever reads the partitions next; releasing
            # them unparks the reader, whose polls serve the last commit's result.
            self._take_ahead(self._reader)
            # What was delivered is committed before leaving, so a restart re-reads less.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._flush_commits(), 5.0)
            with contextlib.suppress(Exception):
                await self._reader.close()
            self._reader = None
        self._was_ready = False

    async def lag(self) -> dict[tuple[str, int], int]:
        """Records from the last commit to the high watermark, per assigned partition (the metric)."""
        reader = self._reader
        if reader is None:
            return {}
        return reader.lag()

    # --- connection -------------------------------------------------------------------------

    async def _connect(self) -> RecordReader:
        delay = 0.2
        while True:
            reader = RecordReader(self._config, self._topics, max_records=MAX_BATCH_RECORDS)
            try:
                if self._config.auto_create_topics:
                    await ensure_topics(self._config)
                await reader.connect()
            except Exception as exc:
                self.errors += 1
                self.telemetry.error("connect")
                log.warning("kafka consumer cannot connect (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)
                continue
            log.info("kafka consumer joining group %s for %s", self._config.consumer_group, self._topics)
            return reader

    async def _health(self) -> None:
        """Logs readiness changes and records the lag."""
        while True:
            ok = self.ready
            if ok != self._was_ready:
                log.info("kafka %s", "reachable" if ok else "unreachable")
            self._was_ready = ok
            if ok and self.telemetry.metrics is not None:
                self.telemetry.lag(await self.lag())
            await asyncio.sleep(self._health_interval_s)

    # --- consumption ------------------------------------------------------------------------

    async def _run(self) -> None:
        reader = self._reader = await self._connect()
        reader.start(self._on_records, self._on_fetch_error)
        await self._deliver_batches(reader)

    def _backoff(self, exc: Exception, delay: float) -> float:
        """Count and log a failed loop pass; the delay before the next one."""
        # librdkafka reconnects by itself; back off so a dead broker does not spin the loop.
        # Anything else is logged and retried too: a dead loop would stop consumption silently.
        self.errors += 1
        self.telemetry.error("consume")
        if isinstance(exc, KafkaException):
            log.warning("kafka consume failed (%s); retrying in %.1fs", exc, delay)
        else:
            log.exception("kafka consume loop failed; retrying in %.1fs", delay)
        return min(delay * 2, _MAX_BACKOFF_S)

    def _on_records(self, records: list[Record]) -> None:
        ahead = self._ahead
        for record in records:
            tp = record.tp
            run = ahead.get(tp)
            if run is None:
                ahead[tp] = [record]
            else:
                run.append(record)
        self._ahead_count += len(records)
        self._ahead_set.set()

    def _on_fetch_error(self, error: KafkaError) -> None:
        # librdkafka recovers by itself (reconnects, metadata refresh); counted and logged so a
        # missing topic or a lost broker shows.
        self.errors += 1
        self.telemetry.error("fetch")
        log.warning("kafka fetch: %s", error.str())

    async def _next_batch(self, reader: RecordReader) -> dict[TP, list[Record]]:
        await self._ahead_set.wait()
        batch = self._take_ahead(reader)
        self._ahead_set.clear()
        # Records of a partition this instance lost meanwhile are left to its new owner.
        assigned = reader.assignment()
        return {tp: records for tp, records in batch.items() if tp in assigned}

    def _take_ahead(self, reader: RecordReader) -> dict[TP, list[Record]]:
        """The records read ahead, taken off the reader's count (``reader.release``)."""
        batch, self._ahead = self._ahead, {}
        reader.release(self._ahead_count)
        self._ahead_count = 0
        return batch

    def _put_back(self, batch: dict[TP, list[Record]]) -> None:
        """Return ``batch`` to the front of the records waiting, to be read again in order."""
        count = 0
        for tp, records in batch.items():
            self._ahead[tp] = records + self._ahead.get(tp, [])
            count += len(records)
        self._ahead_count += count
        if self._reader is not None:
            self._reader.hold(count)
        self._ahead_set.set()

    async def _deliver_batches(self, reader: RecordReader) -> None:
        delay = 0.2
        while True:
            try:
                batch = await self._next_batch(reader)
                if batch:
                    self._idle.clear()
                    try:
                        await self._process_batch(batch)
                    except Exception:
                        # Not expected (effects are retried inside); handle the batch again rather
                        # than let the next batch's commit pass records never delivered.
                        self._put_back(batch)
                        raise
                    finally:
                        self._idle.set()
                    for tp, records in batch.items():
                        self._to_commit[tp] = records[-1].offset + 1
                    self._schedule_commit()
                    if self._stopping:
                        return
                delay = 0.2
            except Exception as exc:
                wait, delay = delay, self._backoff(exc, delay)
                await asyncio.sleep(wait)

    # --- commits ----------------------------------------------------------------------------

    def _schedule_commit(self) -> None:
        # One commit in flight at a time, at most one per COMMIT_INTERVAL_S; offsets delivered
        # meanwhile go out in the next one, so commits never hold up delivery and committed offsets
        # only move forward.
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_pending(), name="kafka-commit")

    async def _commit_pending(self) -> None:
        loop = asyncio.get_running_loop()
        while self._to_commit:
            wait = self._last_commit + COMMIT_INTERVAL_S - loop.time()
            if wait > 0 and not self._stopping:
                await asyncio.sleep(wait)
            offsets, self._to_commit = self._to_commit, {}
            self._last_commit = loop.time()
            await self._commit(offsets)

    async def _flush_commits(self) -> None:
        committer = self._committer
        if committer is not None and not committer.done():
            with contextlib.suppress(Exception):
                await committer
        await self._commit_pending()

    async def _commit(self, offsets: dict[TP, int]) -> None:
        reader = self._reader
        if reader is None:
            return
        try:
            await reader.commit(offsets)
        except CommitSkipped as exc:
            self.telemetry.error("commit")
            # The partition moved to another instance; it re-reads from the last commit and the
            # dedup drops what this instance already delivered.
            log.info("commit of %s skipped after a rebalance: %s", offsets, exc)
        except Exception as exc:
            # The next batch's commit carries these offsets' successors; until then a restart
            # re-reads a little more, which the dedup absorbs.
            self.errors += 1
            self.telemetry.error("commit")
            log.warning("commit of %s failed: %s", offsets, exc)

    # --- one batch --------------------------------------------------------------------------

    def _parse(self, record: Record) -> _Item | None:
        try:
            event = parse_event(record.value)
        except EnvelopeError as exc:
            self._dispatcher.stats.count_malformed(record.topic)
            self.telemetry.record(record.topic, "malformed")
            log.warning(
                "skipping malformed record %s/%s@%s: %s",
                record.topic,
                record.partition,
                record.offset,
                exc.reason,
            )
            return None
        correlation = None
        for name, value in record.headers or ():
            if name == CORRELATION_HEADER:
                correlation = value
        correlation_id = (
            correlation.decode(errors="replace") if correlation else event.envelope.correlation_id
        )
        # Records of one key keep their order; a record without a key is ordered within its partition.
        group = (record.topic, record.key if record.key is not None else record.partition)
        return _Item(record, event, correlation_id, group)

    async def _process_batch(self, batch: dict[TP, list[Record]]) -> None:
        """Deliver every well-formed record of ``batch``; returns when none is left to retry."""
        items = [item for records in batch.values() for r in records if (item := self._parse(r))]
        try:
            await self._deliver_all(items)
        finally:
            # Counted once per batch: a metric update per record cost more than it told.
            counts, self._counts = self._counts, Counter()
            for (topic, result), n in counts.items():
                self.telemetry.record(topic, result, n)

    async def _deliver_all(self, items: list[_Item]) -> None:
        delay = 0.1
        while items:
            await self._deliver(items)
            left = []
            for item in items:
                if item.finished:
                    continue
                exc = item.error
                if exc is not None:
                    item.attempts += 1
                    if not _transient(exc) and item.attempts >= _MAX_EFFECT_ATTEMPTS:
                        self._dispatcher.stats.count_malformed(item.record.topic)
                        self._counts[(item.record.topic, "failed")] += 1
                        log.error(
                            "giving up on record %s (%s) after %d attempts",
                            item.where,
                            item.event.type,
                            item.attempts,
                            exc_info=exc,
                        )
                        continue
                    log.warning(
                        "delivering %s (%s) failed: %r; retrying in %.1fs",
                        item.where,
                        item.event.type,
                        exc,
                        delay,
                    )
                left.append(item)
            items = left
            if items:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)

    async def _deliver(self, items: list[_Item]) -> None:
        """One attempt at ``items``: marks each finished, or sets the error that stopped it."""
        for item in items:
            item.error = None
        try:
            verdicts = await self._dispatcher.claim_many([item.event for item in items])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            for item in items:
                item.error = exc
            return
        groups: dict[Hashable, list[_Item]] = {}
        for item, verdict in zip(items, verdicts, strict=True):
            if verdict is None:
                groups.setdefault(item.group, []).append(item)
            else:
                item.finished = True
                self._counts[(item.record.topic, verdict.value)] += 1
        waits = []
        started, left = self._start_groups(groups)
        if started or left:
            waits.append(self._settle(started, left))
        waits.extend(self._deliver_group(group) for group in groups.values())
        if len(waits) == 1:
            await waits[0]
        elif waits:
            await asyncio.gather(*waits)

    def _start_groups(
        self, groups: dict[Hashable, list[_Item]]
    ) -> tuple[list[tuple[_Item, asyncio.Future[Emitted]]], list[_Item]]:
        """Start the groups whose every event the dispatcher can start (order-room-only events
        while emits go out in call order) and take them out of ``groups``: their emits leave in
        one history script call, each key's in offset order, with no task per event. Returns the
        started events with their futures, and the events left for the retry."""
        started: list[tuple[_Item, asyncio.Future[Emitted]]] = []
        left: list[_Item] = []
        for key, group in list(groups.items()):
            if all(self._dispatcher.can_start(item.event) for item in group):
                del groups[key]
                self._start_run(group, started, left)
        return started, left

    def _start_run(
        self,
        run: list[_Item],
        started: list[tuple[_Item, asyncio.Future[Emitted]]],
        left: list[_Item],
    ) -> None:
        """Start one key's events ``run`` in order, adding them to ``started`` with their futures;
        the first that fails before it is sent goes, with the rest, to ``left``."""
        for i, item in enumerate(run):
            record = item.record
            try:
                with self.telemetry.consume_span(
                    record.topic, record.partition, record.offset, record.headers, item.correlation_id
                ):
                    future = self._dispatcher.start_claimed(item.event)
            except Exception as exc:
                # Failed before it was sent: it and the key's later events wait for the retry,
                # which redoes it first.
                item.error = exc
                left.extend(run[i:])
                return
            started.append((item, future))

    async def _settle(self, started: list[tuple[_Item, asyncio.Future[Emitted]]], left: list[_Item]) -> None:
        """Wait for the started events; each is then delivered, or its claim is released for the
        retry, as are the claims of the events ``left``."""
        try:
            await asyncio.gather(*(future for _, future in started), return_exceptions=True)
        except asyncio.CancelledError:
            unfinished = [item.event for item, _ in started if not item.finished]
            await self._dispatcher.release(unfinished + [item.event for item in left])
            raise
        release = [item.event for item in left]
        for item, future in started:
            exc = future.exception()
            if exc is None:
                item.finished = True
                outcome = self._dispatcher.settled(item.event, future.result())
                self._counts[(item.record.topic, outcome.value)] += 1
            else:
                item.error = exc
                release.append(item.event)
        await self._dispatcher.release(release)

    async def _deliver_group(self, group: list[_Item]) -> None:
        """One key's claimed events, in order; the first failure leaves the rest for the retry.

        Consecutive events the dispatcher can start (order-room events while the emitter takes
        them in call order, see ``Dispatcher.can_start``) start together: their history appends
        share one script call, in order, instead of a round trip each.
        """
        can_start = self._dispatcher.can_start
        i = 0
        while i < len(group):
            j = i + 1
            try:
                if can_start(group[i].event):
                    while j < len(group) and can_start(group[j].event):
                        j += 1
                    started: list[tuple[_Item, asyncio.Future[Emitted]]] = []
                    left: list[_Item] = []
                    self._start_run(group[i:j], started, left)
                    await self._settle(started, left)
                    if left or any(not item.finished for item, _ in started):
                        await self._dispatcher.release([later.event for later in group[j:]])
                        return
                else:
                    await self._deliver_one(group[i])
            except asyncio.CancelledError:
                # Stopping: the later events were claimed but not applied; give their claims back
                # so whoever reads them next applies them (the run's own were released).
                await self._dispatcher.release([later.event for later in group[j:]])
                raise
            except Exception:
                await self._dispatcher.release([later.event for later in group[j:]])
                return
            i = j

    async def _deliver_one(self, item: _Item) -> None:
        """Apply one claimed event; on failure ``item.error`` says why (and the call raises)."""
        record = item.record
        try:
            with self.telemetry.consume_span(
                record.topic, record.partition, record.offset, record.headers, item.correlation_id
            ):
                outcome = await self._dispatcher.apply_claimed(item.event)
        except Exception as exc:
            item.error = exc
            raise
        item.finished = True
        self._counts[(record.topic, outcome.value)] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s %s: %s", item.where, item.event.type, item.event.event_id, outcome)
