"""Root pytest configuration: the server fixtures live in tests/support/*_fixtures.py."""

from __future__ import annotations

pytest_plugins = [
    "tests.support.redis_fixtures",
    "tests.support.kafka_fixtures",
    "tests.support.kube_fixtures",
    "tests.support.gateway_fixtures",
]
