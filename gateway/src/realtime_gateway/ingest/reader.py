"""The consumer's records, fetched by librdkafka and polled from the event loop.

Why librdkafka and not aiokafka (which the producer and the topic admin still use): aiokafka's
fetcher is pure Python on the event loop and keeps one fetch in flight per broker, sent only after
the previous response was decoded and its records taken. Under load that cycle waited for the
gateway's own work (about eight loop passes between a response and the next request, p99
13-16 ms on two busy cores) and cost about a quarter of the gateway's CPU per Kafka event.
librdkafka fetches ahead in C threads into its own queue; the loop takes what has arrived with a
non-blocking ``consume`` every millisecond while records flow (backing off to ``_POLL_MAX_S``
while none do).

Why the loop polls rather than a thread blocking in ``poll``: a thread has to win the GIL back
from the busy loop after each blocking call, up to the 5 ms switch interval each time, and then
hands over through ``call_soon_threadsafe``. Under load these waits made stalls of 20-55 ms
before a record even reached the loop (scenario K of the benchmark, twelfth round). Polled from
the loop, a record waits at most one poll interval plus the loop's current pass, and librdkafka's
callbacks (rebalance, commit results, statistics) run on the loop, so nothing here is shared
between threads.

Backpressure: while ``max_records`` it handed over wait unhandled on the loop (``hold``/
``release``), the reader parks: librdkafka fetches ahead into its own bounded queue meanwhile and
stops when that is full. A loop that stays full for ``PARK_S`` (a batch stuck on a failing effect)
makes the reader pause its partitions and poll on: librdkafka then drops what it fetched ahead and
fetches nothing, so a stuck batch holds records at the broker rather than in memory, and polling
keeps the consumer in its group however long the batch takes (``max.poll.interval.ms``) and
serves the commit and statistics callbacks. On resume it fetches from the record after the last
one handed over. Pausing only then matters: under a load the loop only just keeps up with, the
queue fills and empties many times a second, and pausing and resuming at that rate left
partitions that fetched nothing after their resume (scenario K of the benchmark, librdkafka 2.16).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from realtime_gateway.ingest.kafka_config import KafkaConfig

log = logging.getLogger(__name__)

# A partition as the consumer keys its records: (topic, partition).
TP = tuple[str, int]

# How often the loop polls librdkafka's queue while records flow (some came within ``_FLOWING_S``:
# they come in runs, one per producer batch, with empty polls between), and at most while none do
# (the interval doubles per empty poll): an idle gateway wakes about 125 times a second for it.
_POLL_MIN_S: Final = 0.001
_POLL_MAX_S: Final = 0.008
_FLOWING_S: Final = 0.1
# The pause after a failed poll, so a broken consumer does not spin the loop.
_RETRY_S: Final = 0.05
# How long the loop's queue stays full before the reader pauses its partitions (at most a third
# of ``max.poll.interval.ms``, so the consumer polls again well within it).
PARK_S: Final = 5.0
# How often librdkafka's statistics (broker states, lag) refresh ``reachable`` and the lag.
_STATS_INTERVAL_MS: Final = 1000
# Commit errors that mean the partitions moved to another member: its re-read is absorbed by the
# eventId dedup, so these are expected, not failures.
_REBALANCED: Final = frozenset(
    {
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError._ASSIGNMENT_LOST,
    }
)


@dataclass(frozen=True, slots=True)
class Record:
    """One fetched record: what the ingest needs of librdkafka's ``Message``."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)


class CommitSkipped(Exception):
    """A commit refused because the group rebalanced; the partitions' new owner re-reads them."""


class RecordReader:
    """A group consumer of ``topics`` whose records reach ``on_records`` on the event loop.

    A task on the loop is the consumer's only user once started; the assignment, the broker's
    reachability and the lag come from the callbacks its polls serve (rebalance, statistics).
    """

    def __init__(self, config: KafkaConfig, topics: Iterable[str], *, max_records: int) -> None:
        self._config = config
        self._topics = list(topics)
        self._max_records = max_records
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None
        # Records handed to the loop and not yet taken by it (``hold``/``release``); ``_full``
        # once ``max_records`` are held (since ``_full_since``): the reader parks, then pauses
        # the partitions in ``_paused``.
        self._held = 0
        self._full = False
        self._full_since = 0.0
        self._park_s = PARK_S
        self._paused: set[TP] = set()
        self._assigned: frozenset[TP] = frozenset()
        self._joined = False
        self._reachable = False
        self._failed = False
        self._lag: dict[TP, int] = {}
        self._commit_done: asyncio.Future[KafkaError | None] | None = None

    async def connect(self, timeout_s: float = 5.0) -> None:
        """Create the consumer and wait until the broker answers a metadata request; raises
        ``KafkaException`` when it does not within ``timeout_s`` (the consumer is closed then)."""
        conf = self._config.librdkafka_conf(logger=log) | {
            "on_commit": self._on_commit,
            "stats_cb": self._on_stats,
            "statistics.interval.ms": _STATS_INTERVAL_MS,
        }
        self._park_s = min(PARK_S, conf.get("max.poll.interval.ms", 300_000) / 3000)
        consumer = Consumer(conf)
        try:
            await asyncio.to_thread(consumer.list_topics, None, timeout_s)
        except BaseException:
            await asyncio.to_thread(consumer.close)
            raise
        self._consumer = consumer
        self._reachable = True

    def start(
        self, on_records: Callable[[list[Record]], None], on_error: Callable[[KafkaError], None]
    ) -> None:
        """Join the group and start polling; ``on_records`` and ``on_error`` are called from it."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("the reader is not connected")
        consumer.subscribe(
            self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        self._on_records = on_records
        self._on_error = on_error
        self._task = asyncio.create_task(self._poll(consumer), name="kafka-reader")

    def hold(self, count: int) -> None:
        """``count`` more records wait on the loop."""
        self._held += count
        self._update_full()

    def release(self, count: int) -> None:
        """The loop took ``count`` of the records it held: the reader may hand over that many more."""
        self._held -= count
        self._update_full()

    def _update_full(self) -> None:
        full = self._held >= self._max_records
        if full and not self._full:
            self._full_since = time.monotonic()
        self._full = full

    async def _poll(self, consumer: Consumer) -> None:
        interval = _POLL_MIN_S
        last_taken = 0.0
        while True:
            try:
                taken = self._poll_once(consumer)
            except Exception as exc:
                error = _kafka_error(exc)
                if error is not None and error.fatal():
                    # librdkafka cannot go on with this consumer: readiness drops for good.
                    log.error("kafka consumer failed for good: %s", error.str())
                    self._failed = True
                    return
                # Kept alive: a dead poller would stop consumption without a word.
                log.exception("kafka reader: poll failed; polling again")
                await asyncio.sleep(_RETRY_S)
                continue
            now = time.monotonic()
            if taken:
                last_taken = now
            interval = next_interval(interval, now - last_taken, parked=self._full and not self._paused)
            await asyncio.sleep(interval)

    def _poll_once(self, consumer: Consumer) -> int:
        """Hand over what librdkafka has fetched, up to what the loop has room for (filling it
        parks the reader); how many messages were taken."""
        if self._full:
            if not self._paused and time.monotonic() - self._full_since < self._park_s:
                return 0  # parked (module docstring)
            self._pause(consumer)
        elif self._paused:
            self._resume(consumer)
        # Paused partitions return nothing; one assigned while the loop was full may hand over a
        # run before the next pass pauses it too.
        room = max(1, self._max_records - self._held)
        messages = consumer.consume(room, 0)
        if not messages:
            return 0
        records, errors = _split(messages)
        if records:
            self.hold(len(records))
            self._on_records(records)
        for error in errors:
            self._on_error(error)
        return len(messages)

    def _pause(self, consumer: Consumer) -> None:
        new = self._assigned - self._paused
        if new:
            consumer.pause([TopicPartition(topic, part) for topic, part in new])
            self._paused |= new

    def _resume(self, consumer: Consumer) -> None:
        # Every partition paused, including any revoked since: librdkafka keeps a partition's
        # pause across a rebalance, so one assigned here again would otherwise stay paused.
        consumer.resume([TopicPartition(topic, part) for topic, part in self._paused])
        self._paused = set()

    # --- librdkafka's callbacks, served by the polls ------------------------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = self._assigned | {(tp.topic, tp.partition) for tp in partitions}
        self._joined = True

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = self._assigned - {(tp.topic, tp.partition) for tp in partitions}

    def _on_stats(self, stats_json: str) -> None:
        # An exception here would surface from ``consume`` and could cost the records it returns.
        try:
            self._read_stats(orjson.loads(stats_json))
        except Exception:
            log.exception("kafka statistics unreadable")

    def _read_stats(self, stats: dict[str, Any]) -> None:
        self._reachable = any(
            broker.get("nodeid", -1) >= 0 and broker.get("state") == "UP"
            for broker in stats.get("brokers", {}).values()
        )
        lag: dict[TP, int] = {}
        for topic, tstats in stats.get("topics", {}).items():
            for pstats in tstats.get("partitions", {}).values():
                tp = (topic, pstats.get("partition", -1))
                if tp in self._assigned and pstats.get("consumer_lag", -1) >= 0:
                    lag[tp] = pstats["consumer_lag"]
        self._lag = lag

    def _on_commit(self, error: KafkaError | None, _partitions: list[TopicPartition]) -> None:
        done, self._commit_done = self._commit_done, None
        if done is not None:
            _resolve(done, error)

    # --- used by the loop ---------------------------------------------------------------------

    @property
    def consuming(self) -> bool:
        """In the group and connected: what is produced from now on reaches ``on_records``."""
        return self._joined and self._reachable and not self._failed

    def assignment(self) -> frozenset[TP]:
        return self._assigned

    def lag(self) -> dict[TP, int]:
        """Records from the last commit to the high watermark per assigned partition, as of the
        last statistics (librdkafka's ``consumer_lag``)."""
        return self._lag

    async def commit(self, offsets: dict[TP, int]) -> None:
        """Commit ``offsets`` (the next offset to read, per partition); one commit at a time.
        Raises ``CommitSkipped`` after a rebalance and ``KafkaException`` for other failures."""
        consumer = self._consumer
        if consumer is None:
            raise KafkaException(KafkaError(KafkaError._DESTROY, "the consumer closed"))
        done: asyncio.Future[KafkaError | None] = asyncio.get_running_loop().create_future()
        self._commit_done = done
        partitions = [TopicPartition(topic, part, offset) for (topic, part), offset in offsets.items()]
        try:
            # The result comes back through ``_on_commit``, served by a later poll.
            consumer.commit(offsets=partitions, asynchronous=True)
        except Exception as exc:
            # Settled either way: a commit left waiting would hold every later one.
            self._commit_done = None
            error = _kafka_error(exc)
            _resolve(done, error if error is not None else KafkaError(KafkaError._FAIL, str(exc)))
        error = await done
        if error is None or error.code() == KafkaError._NO_OFFSET:  # done, or nothing to commit
            return
        if error.code() in _REBALANCED:
            raise CommitSkipped(error.str())
        raise KafkaException(error)

    async def close(self) -> None:
        """Stop polling and leave the group (its partitions go to the other members at once)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # A commit not heard back about fails instead of waiting; the close below runs in a
        # worker thread, where a late result must not touch the loop's future.
        done, self._commit_done = self._commit_done, None
        if done is not None:
            _resolve(done, KafkaError(KafkaError._DESTROY, "the consumer closed"))
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await asyncio.to_thread(consumer.close)
        self._reachable = False


def next_interval(interval: float, since_taken: float, *, parked: bool) -> float:
    """The wait before the next poll: ``_POLL_MIN_S`` while records flow (the last came
    ``since_taken`` seconds ago, within ``_FLOWING_S``) or while parked (parking ends as soon as
    the loop takes records); otherwise ``interval`` doubled, up to ``_POLL_MAX_S``."""
    if since_taken < _FLOWING_S or parked:
        return _POLL_MIN_S
    return min(interval * 2, _POLL_MAX_S)


def _kafka_error(exc: Exception) -> KafkaError | None:
    """The ``KafkaError`` a confluent-kafka call raised, if that is what it raised."""
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return error if isinstance(error, KafkaError) else None


def _resolve(future: asyncio.Future[KafkaError | None], error: KafkaError | None) -> None:
    if not future.done():
        future.set_result(error)


def _split(messages: list[Message]) -> tuple[list[Record], list[KafkaError]]:
    records: list[Record] = []
    errors: list[KafkaError] = []
    for m in messages:
        error = m.error()
        if error is not None:
            errors.append(error)
            continue
        records.append(
            Record(
                m.topic() or "",
                m.partition() or 0,
                m.offset() or 0,
                _as_bytes(m.key()),
                _as_bytes(m.value()),
                m.headers(),  # type: ignore[arg-type]
            )
        )
    return records, errors


def _as_bytes(data: Any) -> bytes | None:
    return data if data is None or isinstance(data, bytes) else bytes(data)
