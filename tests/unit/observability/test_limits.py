from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from realtime_gateway.limits import ConnectionGate, ProtectionConfig, client_ip
from realtime_gateway.observability.metrics import GatewayMetrics
from realtime_gateway.ratelimit import MemoryRateLimiter, RateRule

pytestmark = pytest.mark.unit


def environ(remote: str = "10.0.0.9", **headers: str) -> dict[str, Any]:
    env: dict[str, Any] = {"REMOTE_ADDR": "127.0.0.1", "aiohttp.request": SimpleNamespace(remote=remote)}
    for k, v in headers.items():
        env["HTTP_" + k.upper()] = v
    return env


def test_client_ip_is_the_peer_without_a_trusted_header() -> None:
    cfg = ProtectionConfig()
    assert client_ip(environ(X_FORWARDED_FOR="1.2.3.4"), cfg) == "10.0.0.9"
    assert client_ip({"REMOTE_ADDR": "192.0.2.1"}, cfg) == "192.0.2.1"


def test_client_ip_from_the_trusted_proxy_header() -> None:
    one = ProtectionConfig(trusted_proxy_header="X-Forwarded-For")
    two = ProtectionConfig(trusted_proxy_header="X-Forwarded-For", trusted_proxy_hops=2)
    # The client claims 6.6.6.6; our ingress appended the address it saw.
    env = environ(X_FORWARDED_FOR="6.6.6.6, 203.0.113.7")
    assert client_ip(env, one) == "203.0.113.7"
    assert client_ip(environ(X_FORWARDED_FOR="6.6.6.6, 203.0.113.7, 10.1.1.1"), two) == "203.0.113.7"
    assert client_ip(environ(X_FORWARDED_FOR="203.0.113.7"), two) == "203.0.113.7"
    assert client_ip(environ(), one) == "10.0.0.9"  # header missing: fall back to the peer
    real_ip = ProtectionConfig(trusted_proxy_header="X-Real-IP")
    assert client_ip(environ(X_REAL_IP="198.51.100.2"), real_ip) == "198.51.100.2"


async def test_capacity_draining_and_connect_rate() -> None:
    metrics = GatewayMetrics(process_metrics=False)
    per_ip = RateRule(3, 60)
    cfg = ProtectionConfig(max_connections=2, connect_rate=per_ip)
    live = [0]
    gate = ConnectionGate(cfg, MemoryRateLimiter({"connect": per_ip}), metrics, connections=lambda: live[0])
    assert await gate.admit(environ("1.1.1.1")) is None
    live[0] = 2
    full = await gate.admit(environ("2.2.2.2"))
    assert full is not None and full.code == "CAPACITY" and full.reason == "CAPACITY"
    live[0] = 1
    assert await gate.admit(environ("1.1.1.1")) is None
    assert await gate.admit(environ("1.1.1.1")) is None  # third attempt from this IP
    limited = await gate.admit(environ("1.1.1.1"))
    assert limited is not None and limited.code == "RATE_LIMITED"
    assert limited.as_connect_error()["retryAfterMs"] > 0
    assert await gate.admit(environ("4.4.4.4")) is None  # other addresses are unaffected
    gate.draining = True
    draining = await gate.admit(environ("3.3.3.3"))
    assert draining is not None and draining.code == "CAPACITY" and draining.reason == "DRAINING"
    refusals = metrics.connection_refusals
    assert refusals.labels("CAPACITY")._value.get() == 1
    assert refusals.labels("RATE_LIMITED")._value.get() == 1
    assert refusals.labels("DRAINING")._value.get() == 1


def test_subscription_cap_counts_refusals() -> None:
    metrics = GatewayMetrics(process_metrics=False)
    gate = ConnectionGate(
        ProtectionConfig(max_subscriptions=2), MemoryRateLimiter(), metrics, connections=lambda: 0
    )
    assert gate.allow_subscription(0) and gate.allow_subscription(1)
    assert not gate.allow_subscription(2)
    assert metrics.subscriptions_refused._value.get() == 1


async def test_no_per_ip_limit_unless_configured() -> None:
    gate = ConnectionGate(
        ProtectionConfig(), MemoryRateLimiter({"connect": RateRule(1, 60)}), None, connections=lambda: 0
    )
    for _ in range(5):
        assert await gate.admit(environ("1.1.1.1")) is None
