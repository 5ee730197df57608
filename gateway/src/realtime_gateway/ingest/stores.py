"""Redis and in-memory state owned by the ingest layer: event dedup, job offers, chat helpers.

Every key has a TTL. The offer scripts touch single keys, so Redis Cluster needs no hash-tag
planning beyond the offer key (which carries its id as the tag); the batch dedup script, whose
keys span slots, runs only on a standalone or Sentinel Redis (a pipeline does its job on Cluster).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

from redis.asyncio.cluster import RedisCluster

from realtime_gateway.ingest.ports import OfferDecision, OfferOutcome, OfferResult
from realtime_gateway.state.multiplex import FastRedis

DEDUP_TTL_S: Final = 24 * 3600
OFFER_GRACE_MS: Final = 10 * 60 * 1000
CLIENT_MESSAGE_TTL_S: Final = 24 * 3600
TYPING_INTERVAL_MS: Final = 1000
SAMPLE_COUNTER_TTL_S: Final = 3600

# ``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster``; both offer the commands used here.
RedisClient = Any


def _lua(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text()


def event_key(event_id: str) -> str:
    return f"event:seen:{event_id}"


def offer_key(offer_id: str) -> str:
    return f"job:offer:{{{offer_id}}}"


def client_message_key(sender_id: str, client_message_id: str) -> str:
    return f"chat:client-message:{sender_id}:{client_message_id}"


def typing_key(user_id: str) -> str:
    return f"chat:typing:throttle:{user_id}"


def sample_key(porter_id: str) -> str:
    return f"porter:location:samples:{porter_id}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _offer_result(raw: list[Any]) -> OfferResult:
    items = [_text(x) for x in raw]
    outcome = OfferOutcome(items[0])
    order_id = items[1] if len(items) > 1 else None
    return OfferResult(outcome=outcome, order_id=order_id, porter_ids=tuple(items[2:]))


# --- Redis ---------------------------------------------------------------------------------


class RedisDedupStore:
    def __init__(
        self, redis: RedisClient, ttl_s: int = DEDUP_TTL_S, *, fast: FastRedis | None = None
    ) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        # A script's keys must share a slot on Redis Cluster; the ids of a batch do not.
        self._claim_script = None if isinstance(redis, RedisCluster) else _lua("dedup_claim.lua")
        # The auto-pipelined connection (standalone Redis): a batch's claim shares a write with
        # the tick's other commands, without redis-py's per-call work.
        self._fast = fast if self._claim_script is not None else None

    async def seen(self, event_id: str) -> bool:
        claimed = await self._redis.set(event_key(event_id), b"1", nx=True, ex=self._ttl_s)
        return not claimed

    async def forget(self, event_id: str) -> None:
        await self._redis.delete(event_key(event_id))

    async def claim_many(self, event_ids: Sequence[str]) -> list[bool]:
        if len(event_ids) == 1:
            return [not await self.seen(event_ids[0])]
        keys = [event_key(event_id) for event_id in event_ids]
        if self._claim_script is not None:
            # One script call: one command to send and one flat reply to parse for the batch.
            args = (self._claim_script, len(keys), *keys, self._ttl_s)
            if self._fast is not None:
                claimed = await self._fast.execute("EVAL", *args)
            else:
                claimed = await self._redis.eval(*args)
            return [bool(c) for c in claimed]
        # One pipeline, not a transaction: on Redis Cluster the keys live in different slots.
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, b"1", nx=True, ex=self._ttl_s)
        return [bool(c) for c in await pipe.execute()]

    async def forget_many(self, event_ids: Sequence[str]) -> None:
        if len(event_ids) == 1:
            await self.forget(event_ids[0])
            return
        pipe = self._redis.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.delete(event_key(event_id))
        await pipe.execute()


class RedisOfferStore:
    def __init__(self, redis: RedisClient, grace_ms: int = OFFER_GRACE_MS) -> None:
        self._create = redis.register_script(_lua("offer_create.lua"))
        self._decide = redis.register_script(_lua("offer_decide.lua"))
        self._grace_ms = grace_ms

    async def create(self, offer_id: str, order_id: str, porter_id: str, expires_at_ms: int) -> None:
        await self._create(
            keys=[offer_key(offer_id)], args=[order_id, porter_id, expires_at_ms, self._grace_ms]
        )

    async def decide(self, offer_id: str, porter_id: str, decision: OfferDecision) -> OfferResult:
        raw = await self._decide(keys=[offer_key(offer_id)], args=[porter_id, decision.value])
        return _offer_result(raw)


class RedisChatState:
    """clientMessageId dedup, the typing throttle and the location sample counter."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis

    async def claim_client_message(
        self, sender_id: str, client_message_id: str, message_id: str
    ) -> str | None:
        """Claim the pair for ``message_id``; returns the earlier message id when it was sent before."""
        key = client_message_key(sender_id, client_message_id)
        if await self._redis.set(key, message_id.encode(), nx=True, ex=CLIENT_MESSAGE_TTL_S):
            return None
        earlier = await self._redis.get(key)
        return _text(earlier) if earlier is not None else message_id

    async def release_client_message(self, sender_id: str, client_message_id: str) -> None:
        await self._redis.delete(client_message_key(sender_id, client_message_id))

    async def typing_allowed(self, user_id: str) -> bool:
        return bool(await self._redis.set(typing_key(user_id), b"1", nx=True, px=TYPING_INTERVAL_MS))

    async def count_location(self, porter_id: str) -> int:
        key = sample_key(porter_id)
        count = int(await self._redis.incr(key))
        if count == 1:
            await self._redis.expire(key, SAMPLE_COUNTER_TTL_S)
        return count


# --- in-memory (embedded mode: one process, no Redis) ---------------------------------------


class _Expiring:
    """A dict whose entries vanish after their deadline (monotonic ms)."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[float, Any]] = {}

    def get(self, key: str) -> Any | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] <= time.monotonic():
            del self._data[key]
            return None
        return item[1]

    def set_nx(self, key: str, value: Any, ttl_s: float) -> bool:
        if self.get(key) is not None:
            return False
        self._data[key] = (time.monotonic() + ttl_s, value)
        if len(self._data) > 100_000:
            self._sweep()
        return True

    def pop(self, key: str) -> None:
        self._data.pop(key, None)

    def _sweep(self) -> None:
        now = time.monotonic()
        for k in [k for k, (deadline, _) in self._data.items() if deadline <= now]:
            del self._data[k]


class MemoryDedupStore:
    def __init__(self, ttl_s: int = DEDUP_TTL_S) -> None:
        self._keys = _Expiring()
        self._ttl_s = ttl_s

    async def seen(self, event_id: str) -> bool:
        return not self._keys.set_nx(event_id, True, self._ttl_s)

    async def forget(self, event_id: str) -> None:
        self._keys.pop(event_id)

    # Through ``seen``/``forget``, so a store that overrides those behaves alike in batches.
    async def claim_many(self, event_ids: Sequence[str]) -> list[bool]:
        return [not await self.seen(event_id) for event_id in event_ids]

    async def forget_many(self, event_ids: Sequence[str]) -> None:
        for event_id in event_ids:
            await self.forget(event_id)


@dataclass
class _Offer:
    order_id: str
    expires_at_ms: int
    state: str = "open"
    porters: dict[str, str] = field(default_factory=dict)


class MemoryOfferStore:
    def __init__(self, grace_ms: int = OFFER_GRACE_MS) -> None:
        self._offers: dict[str, _Offer] = {}
        self._grace_ms = grace_ms

    def _live(self, offer_id: str) -> _Offer | None:
        offer = self._offers.get(offer_id)
        if offer is not None and offer.expires_at_ms + self._grace_ms <= _now_ms():
            del self._offers[offer_id]
            return None
        return offer

    async def create(self, offer_id: str, order_id: str, porter_id: str, expires_at_ms: int) -> None:
        offer = self._live(offer_id)
        if offer is None:
            offer = self._offers[offer_id] = _Offer(order_id=order_id, expires_at_ms=expires_at_ms)
        offer.expires_at_ms = expires_at_ms
        offer.porters.setdefault(porter_id, "offered")

    async def decide(self, offer_id: str, porter_id: str, decision: OfferDecision) -> OfferResult:
        # No await between the checks and the update: atomic on the event loop, like the Lua script.
        offer = self._live(offer_id)
        if offer is None:
            return OfferResult(OfferOutcome.NOT_FOUND)
        mine = offer.porters.get(porter_id)
        if mine is None:
            return OfferResult(OfferOutcome.FORBIDDEN, offer.order_id)
        if offer.state != "open" or mine != "offered":
            return OfferResult(OfferOutcome.CONFLICT, offer.order_id)
        if _now_ms() >= offer.expires_at_ms:
            return OfferResult(OfferOutcome.EXPIRED, offer.order_id)
        if decision is OfferDecision.ACCEPT:
            offer.state = "accepted"
            offer.porters[porter_id] = "accepted"
        else:
            offer.porters[porter_id] = "rejected"
        return OfferResult(OfferOutcome.OK, offer.order_id, tuple(offer.porters))


class MemoryChatState:
    def __init__(self) -> None:
        self._messages = _Expiring()
        self._typing = _Expiring()
        self._samples: dict[str, int] = {}

    async def claim_client_message(
        self, sender_id: str, client_message_id: str, message_id: str
    ) -> str | None:
        key = client_message_key(sender_id, client_message_id)
        if self._messages.set_nx(key, message_id, CLIENT_MESSAGE_TTL_S):
            return None
        earlier = self._messages.get(key)
        return str(earlier) if earlier is not None else message_id

    async def release_client_message(self, sender_id: str, client_message_id: str) -> None:
        self._messages.pop(client_message_key(sender_id, client_message_id))

    async def typing_allowed(self, user_id: str) -> bool:
        return self._typing.set_nx(user_id, True, TYPING_INTERVAL_MS / 1000)

    async def count_location(self, porter_id: str) -> int:
        self._samples[porter_id] = self._samples.get(porter_id, 0) + 1
        return self._samples[porter_id]
