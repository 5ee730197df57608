"""The consumer's batches on the real broker and real Redis, in-process: orders run concurrently,
each order in sequence; a failing effect holds its order and its partition's commit; the batched
Redis calls (dedup claims, history appends) on a standalone Redis and on a Redis Cluster."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final, cast

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from realtime_gateway.fanout.emitter import order_room
from realtime_gateway.ingest import consumer as consumer_module
from realtime_gateway.ingest import reader as reader_module
from realtime_gateway.ingest.consumer import KafkaIngest
from realtime_gateway.ingest.dispatch import Dispatcher, Outcome
from realtime_gateway.ingest.envelope import build_envelope, parse_event
from realtime_gateway.ingest.kafka_config import KafkaConfig
from realtime_gateway.ingest.reader import RecordReader
from realtime_gateway.ingest.stores import MemoryOfferStore, RedisDedupStore
from realtime_gateway.ingest.topics import ensure_topics
from realtime_gateway.recovery.emitter import ReliableEmitter
from realtime_gateway.recovery.history import DEDUP_WINDOW_FACTOR, Appended, Position, RedisHistory, ids_key
from realtime_gateway.settings import parse_redis_url
from realtime_gateway.state.connect import open_redis
from realtime_gateway.state.keys import room_channel
from realtime_gateway.state.multiplex import FastRedis
from tests.integration.kafka.conftest import NoAccess
from tests.support.deploy import eventually
from tests.support.kafka_fixtures import unique_name
from tests.support.kafka_server import KafkaBroker
from tests.support.redis_server import RedisCluster, RedisServer

pytestmark = pytest.mark.integration


class SlowEmitter:
    """Records each order's ``seq`` values; every emit yields to the loop a little, so concurrent
    orders interleave; ``fail`` maps an eventId to how many times its emit raises first."""

    def __init__(self) -> None:
        self.seqs: dict[str, list[int]] = defaultdict(list)
        self.fail: dict[str, int] = {}
        self.failures = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay_s = 0.002

    async def to_order(
        self, order_id: str, event: str, data: dict[str, Any], *, skip_sid: str | None = None
    ) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(random.uniform(0, self.delay_s))
            if self.fail.get(data["eventId"], 0) > 0:
                self.fail[data["eventId"]] -= 1
                self.failures += 1
                raise ConnectionError("redis went away")
            self.seqs[order_id].append(int(data["seq"]))
        finally:
            self.in_flight -= 1

    async def to_user(
        self, user_id: str, event: str, data: dict[str, Any], *, skip_sid: str | None = None
    ) -> None: ...

    async def to_admins(self, event: str, data: dict[str, Any]) -> None: ...

    def delivered(self) -> int:
        return sum(len(v) for v in self.seqs.values())


def config_for(broker: KafkaBroker, partitions: int) -> KafkaConfig:
    suffix = unique_name("t")
    return KafkaConfig(
        bootstrap_servers=broker.bootstrap,
        consumer_group=unique_name("g"),
        topics={
            k: f"{k}-{suffix}" for k in ("orderEvents", "porterEvents", "notificationEvents", "chatEvents")
        },
        auto_create_topics=True,
        topic_partitions=partitions,
        auto_offset_reset="earliest",
    )


def status(order_id: str, seq: int) -> tuple[str, bytes]:
    event_id = f"{order_id}-{seq}"
    env = build_envelope(
        "order.status_changed", {"orderId": order_id, "status": "moving", "seq": seq}, event_id=event_id
    )
    return event_id, orjson.dumps(env)


async def produce_interleaved(
    broker: KafkaBroker, topic: str, orders: list[str], per_order: int
) -> dict[str, tuple[TopicPartition, int]]:
    """Every order's events 0..per_order-1, orders interleaved; returns each event's partition and offset."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    where: dict[str, tuple[TopicPartition, int]] = {}
    try:
        futures = []
        for seq in range(per_order):
            for order_id in orders:
                event_id, value = status(order_id, seq)
                futures.append((event_id, await producer.send(topic, value, key=order_id.encode())))
        for event_id, fut in futures:
            meta = await fut
            where[event_id] = (TopicPartition(meta.topic, meta.partition), meta.offset)
    finally:
        await producer.stop()
    return where


async def committed(broker: KafkaBroker, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items()}


async def until_delivered_and_committed(
    emitter: SlowEmitter, broker: KafkaBroker, group: str, total: int, what: str = "every event delivered"
) -> None:
    """Every event emitted, then every offset committed (commits follow delivery)."""

    async def all_delivered() -> bool:
        return emitter.delivered() >= total

    await eventually(all_delivered, within=30.0, what=what)

    async def all_committed() -> bool:
        offsets = await committed(broker, group)
        return sum(offsets.values()) == total

    await eventually(all_committed, within=30.0, what="every offset committed")


def publishing_dispatcher(history: RedisHistory, redis_client: aioredis.Redis) -> Dispatcher:
    """A dispatcher whose emitter hands order-room events to the Redis ``history``, which
    publishes them (as in the app with Redis)."""
    emitter = ReliableEmitter(cast(Any, None))  # with history_publishes the manager is not used
    emitter.history, emitter.history_publishes = history, True
    return Dispatcher(emitter, NoAccess(), MemoryOfferStore(), RedisDedupStore(redis_client))


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_orders_run_concurrently_and_each_order_in_produce_order(
    kafka_broker: KafkaBroker, redis_client: aioredis.Redis
) -> None:
    config = config_for(kafka_broker, partitions=3)
    await ensure_topics(config)
    orders = [f"ord{i}" for i in range(12)]
    per_order = 25
    # Produced before the consumer starts, so its first fetches are whole batches.
    await produce_interleaved(kafka_broker, config.topic("orderEvents"), orders, per_order)
    emitter = SlowEmitter()
    dispatcher = Dispatcher(emitter, NoAccess(), MemoryOfferStore(), RedisDedupStore(redis_client))
    ingest = KafkaIngest(config, dispatcher, health_interval_s=0.5)
    ingest.start()
    try:
        total = len(orders) * per_order
        await until_delivered_and_committed(emitter, kafka_broker, config.consumer_group, total)
    finally:
        await ingest.stop()
    for order_id in orders:
        assert emitter.seqs[order_id] == list(range(per_order)), order_id
    assert emitter.max_in_flight > 1, "orders of one batch were not handled concurrently"
    assert dispatcher.stats.by_outcome["delivered"] == len(orders) * per_order


class GatedEmitter(SlowEmitter):
    """Holds every emit until ``gate`` is set; ``entered`` is set by the first one."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def to_order(
        self, order_id: str, event: str, data: dict[str, Any], *, skip_sid: str | None = None
    ) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().to_order(order_id, event, data, skip_sid=skip_sid)


LATER: Final = [f"later{i}" for i in range(6)]


@dataclass
class Held:
    ingest: KafkaIngest
    reader: RecordReader
    emitter: GatedEmitter
    config: KafkaConfig
    where: dict[str, tuple[TopicPartition, int]]


@contextlib.asynccontextmanager
async def a_full_queue(
    kafka_broker: KafkaBroker,
    redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    *,
    paused: bool = True,
) -> AsyncIterator[Held]:
    """A consumer whose first batch (order ``first``'s one record) is held on the loop while ten
    records each of the ``LATER`` orders are produced, with ``MAX_BATCH_RECORDS`` at 10; yields
    once the reader handed over a full queue and (``paused``) paused every partition assigned to
    it, which it does ``PARK_S`` after the queue filled."""
    monkeypatch.setattr(consumer_module, "MAX_BATCH_RECORDS", 10)
    config = config_for(kafka_broker, partitions=2)
    await ensure_topics(config)
    topic = config.topic("orderEvents")
    where = await produce_interleaved(kafka_broker, topic, ["first"], 1)
    emitter = GatedEmitter()
    ingest = KafkaIngest(
        config, Dispatcher(emitter, NoAccess(), MemoryOfferStore(), RedisDedupStore(redis_client))
    )
    ingest.start()
    try:
        await asyncio.wait_for(emitter.entered.wait(), 30)  # the first batch is in hand, held
        await produce_interleaved(kafka_broker, topic, LATER, 10)
        reader = ingest._reader
        assert reader is not None

        async def full() -> bool:
            assigned = reader.assignment()
            return reader._full and bool(assigned) and (reader._paused == assigned or not paused)

        what = "the reader to pause with a full batch waiting" if paused else "a full queue"
        await eventually(full, within=30.0, what=what)
        assert ingest._ahead_count == 10
        yield Held(ingest, reader, emitter, config, where)
        emitter.gate.set()
        await until_delivered_and_committed(emitter, kafka_broker, config.consumer_group, 1 + 60)
    finally:
        emitter.gate.set()
        await ingest.stop()
    assert emitter.seqs["first"] == [0]
    for order_id in LATER:
        assert emitter.seqs[order_id] == list(range(10)), order_id


async def test_records_wait_at_the_broker_while_a_full_batch_waits_on_the_loop(
    kafka_broker: KafkaBroker, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records produced while a batch is held are handed to the loop meanwhile and make the next
    batches, in order; the reader hands over no more than MAX_BATCH_RECORDS unhandled
    records, then pauses until the loop takes them: a stuck batch holds what follows at the
    broker, not in memory."""
    sizes: list[int] = []
    process_batch = KafkaIngest._process_batch

    async def sized(self: KafkaIngest, batch: dict[Any, list[Any]]) -> None:
        sizes.append(sum(len(records) for records in batch.values()))
        await process_batch(self, batch)

    monkeypatch.setattr(KafkaIngest, "_process_batch", sized)
    async with a_full_queue(kafka_broker, redis_client, monkeypatch):
        pass  # released at once: every record delivered, in order, in batches of at most 10
    assert max(sizes) <= 10, sizes


async def test_a_queue_full_for_less_than_the_park_time_pauses_no_partition(
    kafka_broker: KafkaBroker, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop that only just keeps up fills its queue and empties it many times a second: the
    reader parks meanwhile instead of pausing and resuming its partitions each time
    (which, at that rate, left partitions fetching nothing after their resume)."""
    pauses: list[Any] = []
    pause = RecordReader._pause

    def counting_pause(self: RecordReader, consumer: Any) -> None:
        pauses.append(self.assignment() - self._paused)
        pause(self, consumer)

    monkeypatch.setattr(RecordReader, "_pause", counting_pause)
    async with a_full_queue(kafka_broker, redis_client, monkeypatch, paused=False) as held:
        # Held full for a while, well short of PARK_S: the condition under test is the time.
        await asyncio.sleep(reader_module.PARK_S / 5)
        assert held.reader._full and held.reader._paused == set()
    assert pauses == []


async def test_a_full_reader_polls_on_past_the_poll_interval_and_stays_in_its_group(
    kafka_broker: KafkaBroker, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch held longer than ``max.poll.interval.ms`` while the loop's queue is full: the
    reader keeps its partitions paused and polls on, so the consumer stays in its group (nothing
    revoked), librdkafka's callbacks are served (statistics, a commit's result), and after the
    release every record is delivered once, in order, from where the paused partitions stopped."""
    conf = KafkaConfig.librdkafka_conf

    def short_poll_interval(self: KafkaConfig, *, logger: Any) -> dict[str, Any]:
        # The broker's smallest session timeout; the poll interval may not be below it.
        return conf(self, logger=logger) | {"session.timeout.ms": 6000, "max.poll.interval.ms": 6000}

    monkeypatch.setattr(KafkaConfig, "librdkafka_conf", short_poll_interval)
    revoked: list[Any] = []
    on_revoke = RecordReader._on_revoke
    stats: list[float] = []
    read_stats = RecordReader._read_stats

    def counting_revoke(self: RecordReader, consumer: Any, partitions: list[Any]) -> None:
        revoked.extend(partitions)
        on_revoke(self, consumer, partitions)

    def counting_stats(self: RecordReader, data: dict[str, Any]) -> None:
        stats.append(time.monotonic())
        read_stats(self, data)

    monkeypatch.setattr(RecordReader, "_on_revoke", counting_revoke)
    monkeypatch.setattr(RecordReader, "_read_stats", counting_stats)
    async with a_full_queue(kafka_broker, redis_client, monkeypatch) as held:
        reader = held.reader
        assigned = reader.assignment()
        since = time.monotonic()

        async def past_the_poll_interval() -> bool:
            return sum(t > since for t in stats) >= 9

        # Statistics are served by poll only: nine of them span more than the 6 s interval.
        await eventually(past_the_poll_interval, within=30.0, what="statistics while paused")
        assert revoked == [], "the consumer left its group while paused"
        assert reader.assignment() == assigned and reader.consuming
        assert held.ingest._ahead_count == 10
        # A commit's result comes back while paused (the first record's own offset: nothing
        # undelivered is passed).
        tp, offset = held.where["first-0"]
        await asyncio.wait_for(reader.commit({(tp.topic, tp.partition): offset}), 10)


async def test_a_failing_event_holds_its_order_and_its_partition_commit(
    kafka_broker: KafkaBroker, redis_client: aioredis.Redis
) -> None:
    config = config_for(kafka_broker, partitions=2)
    await ensure_topics(config)
    orders = [f"hold{i}" for i in range(6)]
    per_order = 6
    emitter = SlowEmitter()
    stuck_id = "hold0-2"
    emitter.fail[stuck_id] = 1_000_000  # until released below
    where = await produce_interleaved(kafka_broker, config.topic("orderEvents"), orders, per_order)
    dispatcher = Dispatcher(emitter, NoAccess(), MemoryOfferStore(), RedisDedupStore(redis_client))
    ingest = KafkaIngest(config, dispatcher, health_interval_s=0.5)
    ingest.start()
    try:

        async def retried() -> bool:
            return emitter.failures >= 4  # retried with backoff for about a second by now

        await eventually(retried, within=30.0, what="the stuck event to be retried")
        # Held: the order's later events wait, and its partition's committed offset stays at or
        # before the undelivered record (at least once), while the retries go on.
        assert emitter.seqs["hold0"] == [0, 1]
        stuck_partition, stuck_offset = where[stuck_id]
        offsets = await committed(kafka_broker, config.consumer_group)
        assert offsets.get(stuck_partition, 0) <= stuck_offset, (offsets, stuck_offset)
        emitter.fail[stuck_id] = 0
        total = len(orders) * per_order
        after = "every event after the release"
        await until_delivered_and_committed(emitter, kafka_broker, config.consumer_group, total, after)
    finally:
        await ingest.stop()
    for order_id in orders:
        assert emitter.seqs[order_id] == list(range(per_order)), order_id


@pytest.mark.parametrize("grace_s", [consumer_module.STOP_GRACE_S, 0.05], ids=["finishes", "cancelled"])
async def test_a_consumer_stopped_mid_batch_leaves_nothing_claimed_and_undelivered(
    kafka_broker: KafkaBroker,
    redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    grace_s: float,
) -> None:
    """Stopping lets the batch in hand finish, or (past the grace period) gives back the claims of
    the events it did not deliver: the next consumer of the group delivers exactly the rest."""
    monkeypatch.setattr(consumer_module, "STOP_GRACE_S", grace_s)
    monkeypatch.setattr(consumer_module, "MAX_BATCH_RECORDS", 40)  # several batches, stop in one
    config = config_for(kafka_broker, partitions=2)
    await ensure_topics(config)
    orders = [f"stop{i}" for i in range(4)]
    per_order = 30
    await produce_interleaved(kafka_broker, config.topic("orderEvents"), orders, per_order)
    dedup = RedisDedupStore(redis_client)
    first = SlowEmitter()
    first.delay_s = 0.01
    ingest = KafkaIngest(config, Dispatcher(first, NoAccess(), MemoryOfferStore(), dedup))
    ingest.start()
    try:

        async def started() -> bool:
            return first.delivered() >= 8

        await eventually(started, within=30.0, what="the first consumer to deliver a few events")
    finally:
        await ingest.stop()
    assert first.delivered() < len(orders) * per_order, "all delivered before the stop; nothing to test"
    second = SlowEmitter()
    again = KafkaIngest(config, Dispatcher(second, NoAccess(), MemoryOfferStore(), dedup))
    again.start()
    try:

        async def rest_delivered() -> bool:
            return first.delivered() + second.delivered() >= len(orders) * per_order

        await eventually(rest_delivered, within=30.0, what="the second consumer to deliver the rest")
        # Nothing more comes: a lost claim would show as a shortfall above, a duplicate here.
        await asyncio.sleep(0.5)
    finally:
        await again.stop()
    for order_id in orders:
        assert first.seqs[order_id] + second.seqs[order_id] == list(range(per_order)), order_id


async def test_a_batch_that_fails_unexpectedly_is_read_again_not_skipped(
    kafka_broker: KafkaBroker, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_for(kafka_broker, partitions=2)
    await ensure_topics(config)
    orders = [f"bug{i}" for i in range(3)]
    per_order = 5
    await produce_interleaved(kafka_broker, config.topic("orderEvents"), orders, per_order)
    deliver_all = KafkaIngest._deliver_all
    broken = {"left": 1}

    async def once_broken(self: KafkaIngest, items: list[Any]) -> None:
        if broken["left"]:
            broken["left"] -= 1
            raise RuntimeError("a bug in the batch path")
        await deliver_all(self, items)

    monkeypatch.setattr(KafkaIngest, "_deliver_all", once_broken)
    emitter = SlowEmitter()
    ingest = KafkaIngest(
        config, Dispatcher(emitter, NoAccess(), MemoryOfferStore(), RedisDedupStore(redis_client))
    )
    ingest.start()
    try:

        async def all_delivered() -> bool:
            return emitter.delivered() >= len(orders) * per_order

        await eventually(all_delivered, within=30.0, what="every event, the failed batch's included")
    finally:
        await ingest.stop()
    assert broken["left"] == 0
    assert ingest.errors >= 1
    for order_id in orders:
        assert emitter.seqs[order_id] == list(range(per_order)), order_id


async def test_one_orders_events_of_a_batch_share_history_calls_in_order(
    kafka_broker: KafkaBroker, redis_client: aioredis.Redis
) -> None:
    """With the Redis history behind the emitter, an order's consecutive status events of one batch
    start together: they reach the history in one script call, still in produce order."""
    config = config_for(kafka_broker, partitions=2)
    await ensure_topics(config)
    orders = [f"run{i}" for i in range(6)]
    per_order = 20
    await produce_interleaved(kafka_broker, config.topic("orderEvents"), orders, per_order)
    history = RedisHistory(redis_client)
    dispatcher = publishing_dispatcher(history, redis_client)
    assert dispatcher.emits_in_call_order
    await redis_client.config_resetstat()
    ingest = KafkaIngest(config, dispatcher)
    ingest.start()
    try:

        async def all_delivered() -> bool:
            return dispatcher.stats.by_outcome["delivered"] >= len(orders) * per_order

        await eventually(all_delivered, within=30.0, what="every event appended")
    finally:
        await ingest.stop()
    for order_id in orders:
        recovery = await history.recover(order_id, Position("", 0))
        assert [e.data["seq"] for e in recovery.events] == list(range(per_order)), order_id
        assert [e.offset for e in recovery.events] == list(range(1, per_order + 1))
    stats = await redis_client.info("commandstats")
    # A few script calls per batch (the dedup claims are one too), not one per order's event.
    assert stats["cmdstat_eval"]["calls"] < per_order // 2, stats["cmdstat_eval"]


class FlakyHistory(RedisHistory):
    """The Redis history, but the append of ``fail_on`` fails ``left`` times: when it is started
    (``mode="start"``) or in the round trip, together with everything it went out with (``"flush"``,
    as a dropped connection fails them)."""

    def __init__(self, client: aioredis.Redis, fail_on: str, left: int, mode: str) -> None:
        super().__init__(client)
        self.fail_on, self.left, self.mode = fail_on, left, mode

    def start_append(
        self, order_id: str, event: str, data: dict[str, Any], publish: bytes | None
    ) -> asyncio.Future[Appended]:
        if self.mode == "start" and self.left and data.get("eventId") == self.fail_on:
            self.left -= 1
            raise ConnectionError("redis went away")
        return super().start_append(order_id, event, data, publish)

    async def _run(self, batch: list[Any]) -> None:
        if self.mode == "flush" and self.left and any(self.fail_on in p.fields for p in batch):
            self.left -= 1
            for pending in batch:
                pending.future.set_exception(ConnectionError("redis went away"))
            return
        await super()._run(batch)


@pytest.mark.parametrize("mixed", [False, True], ids=["status-only", "after-created"])
@pytest.mark.parametrize("mode", ["start", "flush"])
async def test_started_events_that_fail_are_retried_in_order(
    kafka_broker: KafkaBroker, redis_client: aioredis.Redis, mode: str, mixed: bool
) -> None:
    """Order-room events start without a task each (``Dispatcher.start_claimed``); one that fails
    is retried, and its order's later events of the batch wait for it: each order's history is
    complete and in produce order, and every offset is committed. ``after-created``: each order's
    first event is an ``order.created``, so its events are not all startable and its run of
    status events starts after it (``KafkaIngest._deliver_group``)."""
    config = config_for(kafka_broker, partitions=2)
    await ensure_topics(config)
    orders = [f"flaky{i}" for i in range(6)]
    per_order = 8
    if mixed:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
        await producer.start()
        try:
            for order_id in orders:
                created = build_envelope("order.created", {"orderId": order_id, "customerId": "c"})
                await producer.send_and_wait(
                    config.topic("orderEvents"), orjson.dumps(created), key=order_id.encode()
                )
        finally:
            await producer.stop()
    await produce_interleaved(kafka_broker, config.topic("orderEvents"), orders, per_order)
    history = FlakyHistory(redis_client, "flaky0-2", 3, mode)
    dispatcher = publishing_dispatcher(history, redis_client)
    ingest = KafkaIngest(config, dispatcher)
    ingest.start()
    total = len(orders) * (per_order + 1 if mixed else per_order)
    try:

        async def all_delivered() -> bool:
            return dispatcher.stats.by_outcome["delivered"] >= total

        await eventually(all_delivered, within=30.0, what="every event appended")

        async def all_committed() -> bool:
            return sum((await committed(kafka_broker, config.consumer_group)).values()) == total

        await eventually(all_committed, within=30.0, what="every offset committed")
    finally:
        await ingest.stop()
    assert history.left == 0, "the failures were not all used"
    assert ingest.errors == 0
    for order_id in orders:
        recovery = await history.recover(order_id, Position("", 0))
        assert [e.data["seq"] for e in recovery.events] == list(range(per_order)), order_id
    assert dispatcher.stats.by_outcome["delivered"] == total


async def test_order_room_events_are_deduplicated_by_the_history_not_claimed(
    redis_client: aioredis.Redis,
) -> None:
    """With the Redis history the dedup of an order's status events is the history script's own,
    atomic with the append and publish: no claim is taken first, so a process that dies between
    reading an event and appending it leaves nothing that would make the redelivery a duplicate."""
    history = RedisHistory(redis_client)
    dispatcher = publishing_dispatcher(history, redis_client)
    order_id = unique_name("dd")
    first, crashed = (parse_event(status(order_id, seq)[1]) for seq in (0, 1))

    async def claimed(event: Any) -> bool:
        return bool(await redis_client.exists(f"event:seen:{event.event_id}"))

    assert await dispatcher.handle(first) is Outcome.DELIVERED
    assert await dispatcher.handle(first) is Outcome.DUPLICATE  # found in the history, not published
    # A claim round that a crash would cut short leaves no trace: the redelivery is applied.
    assert await dispatcher.claim_many([crashed]) == [None]
    assert not await claimed(first) and not await claimed(crashed)
    assert await dispatcher.handle(crashed) is Outcome.DELIVERED
    recovery = await history.recover(order_id, Position("", 0))
    assert [e.data["seq"] for e in recovery.events] == [0, 1]
    assert dispatcher.stats.by_outcome == {"delivered": 2, "duplicate": 1}
    # Other events still take a claim first.
    created = parse_event(
        orjson.dumps(build_envelope("order.created", {"orderId": order_id, "customerId": "c"}))
    )
    assert await dispatcher.handle(created) is Outcome.DELIVERED
    assert await claimed(created)


# --- the batched Redis calls --------------------------------------------------------------------


@pytest.fixture(params=["redis-py", "auto-pipelined"])
async def fast_of(
    request: pytest.FixtureRequest, any_redis: Any, redis_server: RedisServer, redis_cluster: RedisCluster
) -> AsyncIterator[FastRedis | None]:
    """None (redis-py calls), or the app's auto-pipelined connection(s) to the same Redis."""
    if request.param == "redis-py":
        yield None
        return
    if isinstance(any_redis, aioredis.RedisCluster):
        hosts = ",".join(f"{h}:{p}" for h, p in redis_cluster.startup_nodes)
        handles = open_redis("cluster", parse_redis_url(f"redis://{hosts}"))
    else:
        handles = open_redis("standalone", parse_redis_url(redis_server.url))
    await handles.start()
    try:
        yield handles.fast
    finally:
        await handles.aclose()


def count_commands(fast: FastRedis | None) -> list[str]:
    """The commands ``fast`` sends from now on."""
    used: list[str] = []
    if fast is not None:
        fast.on_command = used.append
    return used


async def test_dedup_claims_a_batch_at_once(any_redis: Any, fast_of: FastRedis | None) -> None:
    dedup = RedisDedupStore(any_redis, fast=fast_of)
    used = count_commands(fast_of)
    assert await dedup.claim_many(["c"]) == [True]
    # A repeat inside the batch is claimed by its first occurrence only.
    assert await dedup.claim_many(["a", "b", "a", "c", "d"]) == [True, True, False, False, True]
    assert 0 < await any_redis.ttl("event:seen:a") <= 24 * 3600
    await dedup.forget_many(["a", "b"])
    assert await dedup.claim_many(["a", "b", "d"]) == [True, True, False]
    # The claim script goes through the fast connection; on Cluster a batch's keys span slots, so
    # the claims are a redis-py pipeline there.
    fast_claims = fast_of is not None and not isinstance(any_redis, aioredis.RedisCluster)
    assert ("eval" in used) == fast_claims, used


async def test_concurrent_history_appends_keep_each_room_in_order(
    any_redis: Any, fast_of: FastRedis | None
) -> None:
    history = RedisHistory(any_redis, fast=fast_of)
    used = count_commands(fast_of)
    rooms = [f"r{i}" for i in range(8)]
    # Issued in one loop turn, interleaved across rooms: one script call (one per slot on Cluster).
    calls = [(room, seq) for seq in range(5) for room in rooms]
    results = await asyncio.gather(
        *(
            history.append(room, "order:status", {"eventId": f"{room}-{seq}", "seq": seq})
            for room, seq in calls
        )
    )
    epochs: dict[str, str] = {}
    for (room, seq), (position, stamped, appended) in zip(calls, results, strict=True):
        assert appended
        assert position.offset == seq + 1
        assert stamped == {"eventId": f"{room}-{seq}", "seq": seq, "offset": seq + 1, "epoch": position.epoch}
        epochs.setdefault(room, position.epoch)
        assert epochs[room] == position.epoch
    # A redelivered event is not appended again and keeps its offset.
    position, _, appended = await history.append("r3", "order:status", {"eventId": "r3-2", "seq": 2})
    assert (position.offset, appended) == (3, False)
    for room in rooms:
        recovery = await history.recover(room, Position(epochs[room], 0))
        assert recovery.recovered
        assert [e.data["seq"] for e in recovery.events] == [0, 1, 2, 3, 4]
    assert ("eval" in used) == (fast_of is not None), used


async def test_the_history_forgets_ids_past_its_dedup_window(
    any_redis: Any, fast_of: FastRedis | None
) -> None:
    history = RedisHistory(any_redis, size=2, fast=fast_of)  # the window: the last 8 offsets
    window = 2 * DEDUP_WINDOW_FACTOR
    for i in range(1, 31):
        await history.append("w1", "order:status", {"eventId": f"e{i}"} if i % 3 else {"seq": i})
        # Each id is kept with its offset's way back to it: two fields per id in the window.
        assert await any_redis.hlen(ids_key("w1")) <= 2 * window
    ids = {k.decode(): v.decode() for k, v in (await any_redis.hgetall(ids_key("w1"))).items()}
    kept = {f"e{i}": str(i) for i in range(30 - window + 1, 31) if i % 3}
    assert ids == {**kept, **{f"#{off}": event_id for event_id, off in kept.items()}}
    # Inside the window a redelivery is dropped; past it, it is a new event.
    position, _, appended = await history.append("w1", "order:status", {"eventId": "e29"})
    assert (position.offset, appended) == (29, False)
    position, _, appended = await history.append("w1", "order:status", {"eventId": "e20"})
    assert (position.offset, appended) == (31, True)


async def test_history_appends_that_cannot_be_sent_fail_instead_of_waiting(
    redis_client: aioredis.Redis, redis_server: RedisServer
) -> None:
    handles = open_redis("standalone", parse_redis_url(redis_server.url))
    await handles.start()
    try:
        assert handles.fast is not None
        await handles.fast.execute("PING")  # connected: the appends take the direct send
        history = RedisHistory(redis_client, fast=handles.fast)
        history.size = None  # type: ignore[assignment]  # not a Redis argument: packing fails
        with pytest.raises(TypeError):
            await asyncio.wait_for(history.append("r1", "order:status", {"eventId": "e1"}), 5)
    finally:
        await handles.aclose()


async def test_history_publishes_each_rooms_events_in_offset_order(redis_client: aioredis.Redis) -> None:
    history = RedisHistory(redis_client)
    rooms = ["p1", "p2", "p3"]
    pubsub = redis_client.pubsub()
    channels = {room_channel(order_room(r)): r for r in rooms}
    await pubsub.ssubscribe(*channels)
    try:
        await asyncio.gather(
            *(
                history.append(
                    room, "order:status", {"eventId": f"{room}-{seq}", "seq": seq}, publish=b"<\0>"
                )
                for seq in range(4)
                for room in rooms
            )
        )
        got: dict[str, list[int]] = defaultdict(list)
        deadline = time.monotonic() + 10
        while sum(len(v) for v in got.values()) < 12:
            assert time.monotonic() < deadline, f"published messages missing: {dict(got)}"
            message = await pubsub.get_message(timeout=1.0)
            if message is None or message["type"] != "smessage":
                continue
            body = message["data"]
            assert body.startswith(b"<") and body.endswith(b">")
            data = orjson.loads(body[1:-1])
            got[channels[message["channel"].decode()]].append(data["offset"])
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert all(got[r] == [1, 2, 3, 4] for r in rooms), dict(got)


async def test_lag_and_readiness_come_from_the_consumer_itself(
    kafka_fresh: KafkaBroker, redis_client: aioredis.Redis
) -> None:
    """The lag (records past the last commit) and the readiness (in the group, a broker
    connection up) are what librdkafka reports, with no request of their own."""
    config = config_for(kafka_fresh, partitions=1)
    await ensure_topics(config)
    topic = config.topic("orderEvents")
    emitter = GatedEmitter()
    emitter.gate.set()
    ingest = KafkaIngest(
        config,
        Dispatcher(emitter, NoAccess(), MemoryOfferStore(), RedisDedupStore(redis_client)),
        health_interval_s=0.2,
    )
    ingest.start()

    async def lag_is(expected: int) -> bool:
        return sum((await ingest.lag()).values()) == expected

    async def ready() -> bool:
        return ingest.ready

    async def not_ready() -> bool:
        return not ingest.ready

    try:
        await eventually(ready, within=30.0, what="the consumer to join its group")
        await produce_interleaved(kafka_fresh, topic, ["a"], 1)
        await until_delivered_and_committed(emitter, kafka_fresh, config.consumer_group, 1)
        emitter.gate.clear()
        await produce_interleaved(kafka_fresh, topic, ["b"], 20)
        await eventually(lambda: lag_is(20), within=30.0, what="the lag to count the held records")
        emitter.gate.set()
        await eventually(lambda: lag_is(0), within=30.0, what="the lag to drop once they are committed")

        await asyncio.to_thread(kafka_fresh.stop)
        await eventually(not_ready, within=30.0, what="readiness to drop with the broker")
        await asyncio.to_thread(kafka_fresh.start)
        await eventually(ready, within=60.0, what="readiness to come back with the broker")
        await produce_interleaved(kafka_fresh, topic, ["c"], 1)
        await until_delivered_and_committed(emitter, kafka_fresh, config.consumer_group, 22)
    finally:
        emitter.gate.set()
        await ingest.stop()
    assert emitter.seqs["b"] == list(range(20))


async def test_the_reader_thread_outlives_a_failed_poll(
    kafka_broker: KafkaBroker, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll that raises is logged and polled again: a dead thread would stop consumption
    while the gateway still looked ready."""
    poll_once = RecordReader._poll_once
    failures = {"left": 2}

    def flaky(self: RecordReader, *args: Any) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("a poll that failed")
        poll_once(self, *args)

    monkeypatch.setattr(RecordReader, "_poll_once", flaky)
    config = config_for(kafka_broker, partitions=1)
    await ensure_topics(config)
    await produce_interleaved(kafka_broker, config.topic("orderEvents"), ["after"], 3)
    emitter = SlowEmitter()
    ingest = KafkaIngest(
        config, Dispatcher(emitter, NoAccess(), MemoryOfferStore(), RedisDedupStore(redis_client))
    )
    ingest.start()
    try:
        await until_delivered_and_committed(emitter, kafka_broker, config.consumer_group, 3)
    finally:
        await ingest.stop()
    assert failures["left"] == 0
    assert emitter.seqs["after"] == [0, 1, 2]
