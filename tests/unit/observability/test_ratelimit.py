from __future__ import annotations

import pytest

from realtime_gateway.ratelimit import (
    DEFAULT_RULES,
    MemoryRateLimiter,
    RateRule,
    classify,
    parse_rule,
    take,
)

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.ms = 1_000_000.0

    def __call__(self) -> float:
        return self.ms


def test_seed_defaults() -> None:
    assert DEFAULT_RULES["general"] == RateRule(100, 60.0)
    assert DEFAULT_RULES["location"] == RateRule(1000, 60.0)
    assert DEFAULT_RULES["chat"] == RateRule(50, 60.0)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("100/60", RateRule(100, 60.0)),
        ("100/60s", RateRule(100, 60.0)),
        (" 50 / 1m ", RateRule(50, 60.0)),
        ("5/500ms", RateRule(5, 0.5)),
        ("1000/1h", RateRule(1000, 3600.0)),
        ("3/1.5s", RateRule(3, 1.5)),
    ],
)
def test_parse_rule(text: str, rule: RateRule) -> None:
    assert parse_rule(text) == rule


@pytest.mark.parametrize("text", ["", "100", "x/60", "100/", "0/60", "10/0", "-1/60", "10/60d"])
def test_parse_rule_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rule(text)


def test_classify() -> None:
    assert classify("location:update") == "location"
    assert classify("chat:message:send") == "chat"
    assert classify("order:subscribe") == "general"
    assert classify("job:offer:accept") == "general"
    assert classify("anything-else") == "general"


async def test_burst_of_120_gets_exactly_100() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock_ms=clock)
    results = []
    for _ in range(120):
        results.append(await limiter.hit("u1", "general"))
        clock.ms += 1  # 120 ms in all: refills 0.2 tokens, not a whole one
    assert sum(r.allowed for r in results) == 100
    assert all(r.allowed for r in results[:100])
    refused = results[100]
    assert not refused.allowed
    # One token per 600 ms at 100/60 s; 0.2 tokens were refilled meanwhile.
    assert 400 < refused.retry_after_ms <= 600


async def test_classes_and_users_are_independent() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter({"general": RateRule(2, 60), "chat": RateRule(1, 60)}, clock_ms=clock)
    assert (await limiter.hit("u1", "general")).allowed
    assert (await limiter.hit("u1", "general")).allowed
    assert not (await limiter.hit("u1", "general")).allowed
    assert (await limiter.hit("u1", "chat")).allowed
    assert not (await limiter.hit("u1", "chat")).allowed
    assert (await limiter.hit("u1", "location")).allowed  # falls back to the default rule
    assert (await limiter.hit("u2", "general")).allowed


async def test_refill_over_time_and_cap() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter({"chat": RateRule(5, 1.0)}, clock_ms=clock)
    for _ in range(5):
        assert (await limiter.hit("u", "chat")).allowed
    denied = await limiter.hit("u", "chat")
    assert not denied.allowed and denied.retry_after_ms == 200
    clock.ms += 199
    assert not (await limiter.hit("u", "chat")).allowed
    clock.ms += 1
    assert (await limiter.hit("u", "chat")).allowed
    clock.ms += 60_000  # a long idle period refills to the burst size, never beyond
    assert sum([(await limiter.hit("u", "chat")).allowed for _ in range(10)]) == 5


def test_take_is_pure_and_matches_the_lua_contract() -> None:
    rule = RateRule(10, 10.0)  # one token per second
    d, tokens, last = take(0.5, 0.0, 0.0, rule, 1)
    assert not d.allowed and d.retry_after_ms == 500 and tokens == 0.5 and last == 0.0
    d, tokens, last = take(tokens, last, 500.0, rule, 1)
    assert d.allowed and d.remaining == 0 and tokens == pytest.approx(0.0)
    # A clock that goes backwards never adds tokens.
    d, tokens2, last2 = take(tokens, last, 100.0, rule, 1)
    assert not d.allowed and tokens2 == tokens and last2 == last


async def test_memory_limiter_evicts_only_full_buckets() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter({"general": RateRule(1, 1.0)}, clock_ms=clock, max_buckets=2)
    await limiter.hit("a", "general")
    await limiter.hit("b", "general")
    clock.ms += 2000
    await limiter.hit("c", "general")  # a and b are full again and may be forgotten
    assert not (await limiter.hit("c", "general")).allowed
