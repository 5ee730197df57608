"""A gateway on Redis stops promptly however soon after starting it is stopped.

Its background loops (readiness gauge, TTL keepalive, presence heartbeat, breaker probe) call
redis-py, whose connect goes through Python 3.11's ``asyncio.wait_for``; a stop that lands while a
connection is being made used to be swallowed there and the shutdown waited forever.
"""

from __future__ import annotations

import asyncio

import pytest

from realtime_contract import Env
from tests.support.gateway_fixtures import EmbeddedFactory

pytestmark = pytest.mark.integration

ROUNDS = 40


async def test_a_gateway_on_redis_stops_within_seconds_of_starting(
    embedded_factory: EmbeddedFactory, redis_url: str
) -> None:
    for round_ in range(ROUNDS):
        embedded = await embedded_factory(**{Env.REDIS_URL: redis_url})
        # Stop at a different point of the start-up connects each round.
        for _ in range(round_ % 8):
            await asyncio.sleep(0)
        try:
            async with asyncio.timeout(10):
                await embedded.stop()
        except TimeoutError:
            pytest.fail(f"round {round_}: the gateway did not stop within 10 s")
