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


class StandInServer:
    """What the handshake watchdog reads of a Socket.IO server: Engine.IO sessions, namespace membership."""

    def __init__(self) -> None:
        self.sessions: dict[str, object] = {}
        self.members: dict[tuple[str, str], str] = {}  # (eio_sid, namespace) -> sid
        self.lookups = 0
        self.closed: list[str] = []
        self.eio = SimpleNamespace(sockets=self.sessions, disconnect=self._disconnect)
        self.manager = SimpleNamespace(sid_from_eio_sid=self._sid)

    def _sid(self, eio_sid: str, namespace: str) -> str | None:
        self.lookups += 1
        return self.members.get((eio_sid, namespace))

    async def _disconnect(self, eio_sid: str) -> None:
        self.closed.append(eio_sid)
        self.sessions.pop(eio_sid, None)


async def test_handshake_watchdog_looks_at_joined_sessions_only_now_and_then() -> None:
    from realtime_gateway.limits import FULL_PASS_EVERY, HandshakeWatchdog

    sio = StandInServer()
    metrics = GatewayMetrics(process_metrics=False)
    watchdog = HandshakeWatchdog(sio, 0.0, metrics, namespaces=("/client",))
    for i in range(100):
        sio.sessions[f"e{i}"] = object()
        sio.members[(f"e{i}", "/client")] = f"s{i}"
    sio.sessions["idle"] = object()  # never sends the namespace CONNECT
    assert await watchdog.sweep() == 1
    assert sio.closed == ["idle"]
    assert metrics.connection_refusals.labels("HANDSHAKE_TIMEOUT")._value.get() == 1
    first = sio.lookups
    assert first == 101
    # Joined sessions are skipped by the next passes; a new session is looked at right away.
    sio.sessions["new"] = object()
    sio.members[("new", "/client")] = "s-new"
    assert await watchdog.sweep() == 0
    assert sio.lookups == first + 1
    # A client that left its namespace but kept the Engine.IO session is still closed, later.
    del sio.members[("e7", "/client")]
    for _ in range(FULL_PASS_EVERY):
        await watchdog.sweep()
    assert sio.closed == ["idle", "e7"]
    assert "e7" not in sio.sessions and len(sio.sessions) == 100
