"""Token bucket rules and the in-memory limiter (embedded mode); the Redis one shares the math."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, Protocol

EventClass = Literal["general", "location", "chat", "connect"]

LOCATION_EVENTS: Final = frozenset({"location:update"})
CHAT_EVENTS: Final = frozenset({"chat:message:send", "chat:typing"})


def classify(event: str) -> EventClass:
    """Which bucket a client event draws from."""
    if event in LOCATION_EVENTS:
        return "location"
    if event in CHAT_EVENTS:
        return "chat"
    return "general"


@dataclass(frozen=True, slots=True)
class RateRule:
    """``points`` tokens per ``window_s``; the bucket holds at most ``points`` (the burst)."""

    points: int
    window_s: float

    def __post_init__(self) -> None:
        if self.points < 1 or not self.window_s > 0:
            raise ValueError(f"rate rule needs points >= 1 and a positive window, got {self}")

    @property
    def per_ms(self) -> float:
        return self.points / (self.window_s * 1000.0)


DEFAULT_RULES: Final[Mapping[str, RateRule]] = {
    "general": RateRule(100, 60.0),
    "location": RateRule(1000, 60.0),
    "chat": RateRule(50, 60.0),
    "connect": RateRule(30, 60.0),
}

_RULE_RE: Final = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_rule(text: str) -> RateRule:
    """``"100/60"``, ``"100/60s"``, ``"50/1m"``, ``"5/500ms"`` → RateRule (window in seconds)."""
    m = _RULE_RE.match(text)
    if not m:
        raise ValueError(f"rate rule {text!r} is not POINTS/WINDOW[ms|s|m|h], e.g. 100/60s")
    return RateRule(int(m.group(1)), float(m.group(2)) * _UNIT_S[m.group(3)])


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after_ms: int
    remaining: int


class RateLimiter(Protocol):
    async def hit(self, key: str, event_class: EventClass, cost: int = 1) -> RateDecision: ...


def take(
    tokens: float, last_ms: float, now_ms: float, rule: RateRule, cost: int
) -> tuple[RateDecision, float, float]:
    """One bucket step: refill for the elapsed time, then try to take ``cost`` tokens.

    Returns the decision and the new (tokens, last_ms). Identical to token_bucket.lua.
    """
    if now_ms > last_ms:
        tokens = min(float(rule.points), tokens + (now_ms - last_ms) * rule.per_ms)
        last_ms = now_ms
    if tokens >= cost:
        tokens -= cost
        return RateDecision(True, 0, math.floor(tokens)), tokens, last_ms
    retry = math.ceil((cost - tokens) / rule.per_ms)
    return RateDecision(False, retry, math.floor(tokens)), tokens, last_ms


class MemoryRateLimiter:
    """Per-process buckets for the embedded (single instance) mode."""

    def __init__(
        self,
        rules: Mapping[str, RateRule] = DEFAULT_RULES,
        clock_ms: Callable[[], float] | None = None,
        max_buckets: int = 100_000,
    ) -> None:
        self._rules: dict[str, RateRule] = dict(rules)
        self._clock = clock_ms or (lambda: time.monotonic() * 1000.0)
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self._max = max_buckets
        # event class -> (points, per_ms) of its rule, for ``refusal`` (rules do not change)
        self._shapes: dict[str, tuple[float, float]] = {}

    def rule(self, event_class: str) -> RateRule:
        return self._rules.get(event_class) or DEFAULT_RULES[event_class]

    async def hit(self, key: str, event_class: EventClass, cost: int = 1) -> RateDecision:
        rule = self.rule(event_class)
        now = self._clock()
        tokens, last = self._buckets.get((event_class, key), (float(rule.points), now))
        decision, tokens, last = take(tokens, last, now, rule, cost)
        if len(self._buckets) >= self._max:
            self._evict_full(now)
        self._buckets[(event_class, key)] = (tokens, last)
        return decision

    def refusal(self, key: str, event_class: EventClass, cost: int = 1) -> RateDecision | None:
        """``hit`` for callers that only act on a refusal, synchronously: the same bucket step,
        None when allowed (no decision is built for the common case), else the refused decision.
        The GPS stream calls this once per update."""
        shape = self._shapes.get(event_class)
        if shape is None:
            rule = self.rule(event_class)
            shape = self._shapes[event_class] = (float(rule.points), rule.per_ms)
        points, per_ms = shape
        now = self._clock()
        bucket = (event_class, key)
        entry = self._buckets.get(bucket)
        if entry is None:
            tokens, last = points, now
        else:
            tokens, last = entry
        # take(), inlined (tests/unit/gateway/test_location_path.py holds them equal).
        if now > last:
            tokens = min(points, tokens + (now - last) * per_ms)
            last = now
        if len(self._buckets) >= self._max:
            self._evict_full(now)
        if tokens >= cost:
            self._buckets[bucket] = (tokens - cost, last)
            return None
        self._buckets[bucket] = (tokens, last)
        return RateDecision(False, math.ceil((cost - tokens) / per_ms), math.floor(tokens))

    def _evict_full(self, now: float) -> None:
        # A bucket untouched for a whole window is full again: forgetting it changes nothing.
        stale = [
            k for k, (_, last) in self._buckets.items() if now - last >= self.rule(k[0]).window_s * 1000.0
        ]
        for k in stale:
            del self._buckets[k]
