"""The Redis metrics' instrumentation on a real Redis (standalone and Cluster): pipelines are counted,
their failures too, and a counted pipeline leaves no reference cycle behind."""

from __future__ import annotations

import gc
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline
from redis.exceptions import ResponseError

from realtime_gateway.observability.metrics import GatewayMetrics
from realtime_gateway.observability.wiring import instrument_redis

pytestmark = pytest.mark.integration


def count(metrics: GatewayMetrics, name: str, operation: str) -> float:
    value = metrics.registry.get_sample_value(name, {"operation": operation})
    return value or 0.0


async def run_pipelines(client: Any, n: int) -> None:
    for i in range(n):
        async with client.pipeline(transaction=False) as pipe:
            pipe.set(f"instr:{i}", i, ex=60)
            pipe.get(f"instr:{i}")
            assert await pipe.execute() == [True, str(i).encode()]


def pipelines_in_cycles() -> int:
    """Pipelines among what the cyclic collector finds now (then collected for good)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    found = sum(isinstance(o, Pipeline | ClusterPipeline) for o in gc.garbage)
    gc.set_debug(0)
    gc.garbage.clear()
    gc.collect()
    return found


async def test_pipelines_are_counted_and_leave_no_cycles(
    any_redis: Any, no_automatic_collection: None
) -> None:
    await run_pipelines(any_redis, 10)
    # redis-py's own: none on standalone Redis; its ClusterPipeline is a cycle by itself.
    before = pipelines_in_cycles()
    assert before == (0 if isinstance(any_redis, aioredis.Redis) else 10)

    metrics = GatewayMetrics(process_metrics=False)
    instrument_redis(any_redis, metrics)
    await run_pipelines(any_redis, 10)
    assert count(metrics, "realtime_redis_hits_total", "pipeline") == 10
    assert pipelines_in_cycles() == before


async def test_a_failing_pipeline_counts_as_a_redis_error(any_redis: Any) -> None:
    metrics = GatewayMetrics(process_metrics=False)
    instrument_redis(any_redis, metrics)
    await any_redis.set("instr:text", "not a number", ex=60)
    pipe = any_redis.pipeline(transaction=False)
    pipe.incr("instr:text")
    with pytest.raises(ResponseError):
        await pipe.execute()
    assert count(metrics, "realtime_redis_errors_total", "pipeline") == 1
    assert count(metrics, "realtime_redis_hits_total", "pipeline") == 0
