"""A steady stream of order events through Kafka to clients spread over several gateway
processes, with a fault injected mid-stream, and the exactly-once-in-order check at the end.

The backend is this test: it announces orders (order access seeded in Redis), produces
``order.status_changed`` events keyed by order id at a steady rate (retrying a send until the
broker acknowledges, as a real producer would), and every client keeps what it received. A client
whose socket dropped comes back on a live instance with its reconnect token and its last offset
and epoch per order (the contract's recovery). The verdict counts, per order, the events lost,
duplicated and reordered, comparing the ``seq`` each client saw with what was produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from realtime_contract import Env
from realtime_gateway.ingest.envelope import build_envelope
from realtime_gateway.state.redis_store import RedisOrderAccessStore
from tests.support.gateway_fixtures import GatewayFactory, mint_token
from tests.support.gateway_proc import GatewayProcess
from tests.support.kafka_server import KafkaBroker

from .conftest import LoggingClient

TOPIC_ENV = {
    "orderEvents": Env.KAFKA_TOPIC_ORDER_EVENTS,
    "porterEvents": Env.KAFKA_TOPIC_PORTER_EVENTS,
    "notificationEvents": Env.KAFKA_TOPIC_NOTIFICATION_EVENTS,
    "chatEvents": Env.KAFKA_TOPIC_CHAT_EVENTS,
}


@dataclass
class Tracked:
    """One customer following one order, across however many sockets it needed."""

    user_id: str
    order_id: str
    instance: int
    client: LoggingClient
    past: list[tuple[str, Any]] = field(default_factory=list)
    reconnects: int = 0
    recovered: list[bool] = field(default_factory=list)

    def log(self) -> list[tuple[str, Any]]:
        return self.past + self.client.log

    def statuses(self) -> list[dict[str, Any]]:
        return [d for e, d in self.log() if e == "order:status"]

    def seqs(self) -> list[int]:
        return [int(d["seq"]) for d in self.statuses()]

    def token(self) -> str:
        sessions = [d for e, d in self.log() if e == "session"]
        return str(sessions[-1]["reconnectToken"])


@dataclass
class Verdict:
    lost: int
    duplicated: int
    reordered: int
    reconnects: int
    recovered_false: int

    def line(self) -> str:
        return (
            f"lost={self.lost} duplicated={self.duplicated} reordered={self.reordered} "
            f"(reconnects={self.reconnects}, recovered:false={self.recovered_false})"
        )


@dataclass
class Stream:
    broker: KafkaBroker
    redis_url: str
    factory: GatewayFactory
    instances: int = 3
    orders: int = 50
    per_order: int = 40
    rate: float = 100.0  # events per second
    procs: list[GatewayProcess] = field(default_factory=list)
    tracked: list[Tracked] = field(default_factory=list)
    dead: set[int] = field(default_factory=set)
    produced: int = 0
    topics: dict[str, str] = field(default_factory=dict)
    producer: AIOKafkaProducer | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.orders * self.per_order

    # --- setup --------------------------------------------------------------------------------
    async def start(self) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.topics = {key: f"{key}-{suffix}" for key in TOPIC_ENV}
        env = {
            Env.REDIS_URL: self.redis_url,
            Env.KAFKA_BOOTSTRAP_SERVERS: self.broker.bootstrap,
            Env.KAFKA_CONSUMER_GROUP: f"rtg-{suffix}",
            Env.KAFKA_AUTO_CREATE_TOPICS: "true",
            Env.KAFKA_TOPIC_PARTITIONS: "3",
            Env.KAFKA_AUTO_OFFSET_RESET: "earliest",
            # The stream test's clients all connect from one address.
            Env.CONNECT_RATE_LIMIT: "100000/60s",
            Env.RATE_LIMIT_GENERAL: "100000/60s",
            **{TOPIC_ENV[key]: name for key, name in self.topics.items()},
        }
        self.procs = list(
            await asyncio.gather(
                *(asyncio.to_thread(self.factory, name=f"stream-gw{i}", **env) for i in range(self.instances))
            )
        )
        redis = Redis.from_url(self.redis_url, decode_responses=True)
        try:
            access = RedisOrderAccessStore(redis)
            for i in range(self.orders):
                user_id, order_id = f"cust-{suffix}-{i}", f"order-{suffix}-{i}"
                await access.record_created(order_id, user_id)
                instance = i % self.instances
                client = LoggingClient(self.procs[instance].url, "/client")
                await client.connect(token=mint_token(user_id, "customer"))
                ack = await client.call("order:subscribe", {"orderId": order_id})
                assert ack["ok"] is True, ack
                self.tracked.append(Tracked(user_id, order_id, instance, client))
        finally:
            await redis.aclose()
        self.producer = AIOKafkaProducer(bootstrap_servers=self.broker.bootstrap, acks="all")
        await self.producer.start()

    async def stop(self) -> None:
        for t in self.tracked:
            with contextlib.suppress(Exception):
                await t.client.disconnect()
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.producer.stop(), 10)

    # --- the stream ---------------------------------------------------------------------------
    async def _send(self, order_id: str, seq: int) -> None:
        envelope = build_envelope(
            "order.status_changed", {"orderId": order_id, "status": f"step-{seq}", "seq": seq}
        )
        value = orjson.dumps(envelope)
        while True:
            assert self.producer is not None
            try:
                await asyncio.wait_for(
                    self.producer.send_and_wait(self.topics["orderEvents"], value, key=order_id.encode()),
                    10,
                )
                return
            except Exception as exc:  # broker down: the backend retries the same event
                self.notes.append(f"produce retry: {exc!r}"[:120])
                await asyncio.sleep(0.5)

    async def produce(self, fault_at: int, fault: Callable[[], Coroutine[Any, Any, None]]) -> float:
        """Produce every event at ``rate``; run ``fault`` (in the background) after ``fault_at``."""
        started = time.monotonic()
        fault_task: asyncio.Task[None] | None = None
        for k in range(self.total):
            order = self.tracked[k % self.orders]
            await self._send(order.order_id, k // self.orders)
            self.produced += 1
            if k + 1 == fault_at:
                fault_task = asyncio.create_task(fault())
            # Steady pacing, not synchronisation: the check at the end waits on conditions.
            delay = started + (k + 1) / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        if fault_task is not None:
            await fault_task
        return time.monotonic() - started

    # --- clients ------------------------------------------------------------------------------
    def live_instance(self, avoid: int) -> int:
        for step in range(1, self.instances + 1):
            candidate = (avoid + step) % self.instances
            if candidate not in self.dead:
                return candidate
        raise AssertionError("no live gateway instance")

    async def reconnect(self, t: Tracked) -> None:
        statuses = t.statuses()
        recover: dict[str, Any] = {}
        if statuses:
            recover[t.order_id] = {"offset": statuses[-1]["offset"], "epoch": statuses[-1]["epoch"]}
        else:
            recover[t.order_id] = {"offset": 0, "epoch": ""}
        instance = t.instance if t.instance not in self.dead else self.live_instance(t.instance)
        t.past.extend(t.client.log)
        client = LoggingClient(self.procs[instance].url, "/client")
        await client.connect(auth={"reconnectToken": t.token(), "recover": recover})
        t.client, t.instance = client, instance
        t.reconnects += 1
        result = await client.next("recovered", timeout=10)
        t.recovered.append(bool(result["recovered"]))

    async def supervise(self, stop: asyncio.Event) -> None:
        """Bring back every client whose socket dropped, until ``stop``."""
        while not stop.is_set():
            dropped = [t for t in self.tracked if not t.client.connected]
            for t in dropped:
                try:
                    await self.reconnect(t)
                except Exception as exc:
                    self.notes.append(f"reconnect of {t.user_id} failed: {exc!r}"[:160])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    def complete(self) -> bool:
        return all(len(t.seqs()) >= self.per_order for t in self.tracked)

    async def settle(self, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and not self.complete():  # noqa: ASYNC110 - polls client logs
            await asyncio.sleep(0.2)
        # A moment more so a late duplicate would be seen, then the verdict.
        await asyncio.sleep(1.0)

    def verdict(self) -> Verdict:
        lost = duplicated = reordered = 0
        for t in self.tracked:
            seqs = t.seqs()
            lost += len(set(range(self.per_order)) - set(seqs))
            duplicated += len(seqs) - len(set(seqs))
            reordered += sum(1 for a, b in itertools.pairwise(seqs) if b < a)
        return Verdict(
            lost,
            duplicated,
            reordered,
            sum(t.reconnects for t in self.tracked),
            sum(1 for t in self.tracked for r in t.recovered if not r),
        )
