"""Token buckets in Redis: one Lua script per check, so every instance shares each user's bucket.

With an auto-pipelined connection (``state/multiplex.py``) the checks of all sockets handled in
one event-loop tick travel to Redis together; each is still its own atomic script call.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any, Final

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError, RedisError

from realtime_gateway.state.keys import porter_orders
from realtime_gateway.state.multiplex import FastRedis

from .bucket import DEFAULT_RULES, EventClass, RateDecision, RateRule

log = logging.getLogger(__name__)

SCRIPT: Final = resources.files(__package__).joinpath("token_bucket.lua").read_text()
SCRIPT_SHA: Final = hashlib.sha1(SCRIPT.encode()).hexdigest()


def bucket_key(event_class: str, key: str) -> str:
    return f"ratelimit:{event_class}:{key}"


class RedisRateLimiter:
    """Fails open: when Redis cannot answer, the event is allowed and ``on_error`` is told.

    Refusing all traffic because the limiter's store is down would turn a Redis blip into a
    full outage; the connection and the handler fail on their own if Redis really is gone.
    """

    def __init__(
        self,
        redis: Redis | RedisCluster,
        rules: Mapping[str, RateRule] = DEFAULT_RULES,
        on_error: Callable[[str], None] | None = None,
        on_hit: Callable[[str], None] | None = None,
        fast: FastRedis | None = None,
    ) -> None:
        self._redis = redis
        # The auto-pipelined connection opened beside ``redis`` (state/connect.py), when there is one.
        self._fast = fast
        self._rules: dict[str, RateRule] = dict(rules)
        self._script = redis.register_script(SCRIPT)
        self._on_error = on_error
        self._on_hit = on_hit

    def rule(self, event_class: str) -> RateRule:
        return self._rules.get(event_class) or DEFAULT_RULES[event_class]

    async def hit(self, key: str, event_class: EventClass, cost: int = 1) -> RateDecision:
        rule = self.rule(event_class)
        try:
            if self._fast is not None:
                if event_class == "location":
                    # A location update's next step reads the porter's orders (RedisLocationStore.put,
                    # the key is the porter's user id): send that read with this check, one round
                    # trip for both. A read only; nothing changes if the check refuses.
                    self._fast.read_ahead("SMEMBERS", porter_orders(key))
                allowed, retry_ms, remaining = await self._run_fast(
                    bucket_key(event_class, key), rule.points, rule.window_s * 1000.0, cost
                )
            else:
                allowed, retry_ms, remaining = await self._script(
                    keys=[bucket_key(event_class, key)],
                    args=[rule.points, rule.window_s * 1000.0, cost],
                )
        except RedisError as exc:
            log.warning("rate limit check failed, allowing", extra={"error": type(exc).__name__})
            if self._on_error is not None:
                self._on_error("ratelimit")
            return RateDecision(True, 0, 0)
        if self._on_hit is not None:
            self._on_hit("ratelimit")
        return RateDecision(bool(allowed), int(retry_ms), int(remaining))

    async def _run_fast(self, key: str, *args: Any) -> Any:
        assert self._fast is not None
        try:
            return await self._fast.execute("EVALSHA", SCRIPT_SHA, 1, key, *args)
        except NoScriptError:
            # First use on this Redis (or after a restart / SCRIPT FLUSH): EVAL caches it again.
            return await self._fast.execute("EVAL", SCRIPT, 1, key, *args)
