"""Per-user token-bucket rate limits (seed §6): Redis-backed across instances, in memory when embedded."""

from .bucket import (
    DEFAULT_RULES,
    EventClass,
    MemoryRateLimiter,
    RateDecision,
    RateLimiter,
    RateRule,
    classify,
    parse_rule,
    take,
)
from .redis_limiter import RedisRateLimiter, bucket_key

__all__ = [
    "DEFAULT_RULES",
    "EventClass",
    "MemoryRateLimiter",
    "RateDecision",
    "RateLimiter",
    "RateRule",
    "RedisRateLimiter",
    "bucket_key",
    "classify",
    "parse_rule",
    "take",
]
