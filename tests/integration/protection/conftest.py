"""Gateway processes on a real Redis, real Socket.IO clients, and /metrics scraping."""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from realtime_contract import Env
from realtime_gateway.state.redis_store import RedisOrderAccessStore
from tests.support.deploy import ROLE_NAMESPACE, seed_order, uid
from tests.support.gateway_fixtures import GatewayFactory, mint_token
from tests.support.gateway_proc import GatewayProcess
from tests.support.sio import SioClient

# Re-exported for this directory's tests.
__all__ = ["Stack", "ascrape", "scrape", "uid"]


class Scrape:
    """One /metrics scrape: samples by name, each a list of (labels, value)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples.setdefault(s.name, []).append((dict(s.labels), float(s.value)))

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
        return sum(v for lbl, v in self.samples.get(name, []) if labels.items() <= lbl.items())

    def label_sets(self, name: str) -> set[frozenset[str]]:
        return {frozenset(k for k in lbl if k != "le") for lbl, _ in self.samples.get(name, [])}


def scrape(base_url: str) -> Scrape:
    with urllib.request.urlopen(base_url + "/metrics", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return Scrape(resp.read().decode())


async def ascrape(base_url: str) -> Scrape:
    """``scrape`` without blocking the loop (needed when the gateway runs in this process)."""
    async with aiohttp.ClientSession() as http, http.get(base_url + "/metrics") as resp:
        assert resp.status == 200
        return Scrape(await resp.text())


@dataclass
class Stack:
    redis_url: str
    factory: GatewayFactory
    redis: Redis
    clients: list[SioClient] = field(default_factory=list)

    @property
    def orders(self) -> RedisOrderAccessStore:
        return RedisOrderAccessStore(self.redis)

    def start(self, name: str, **env: Any) -> GatewayProcess:
        return self.factory(name=name, **{Env.REDIS_URL: self.redis_url, **env})

    async def order(self, customer_id: str, porter_id: str | None = None) -> str:
        return await seed_order(self.orders, customer_id, porter_id)

    def client(self, gw: GatewayProcess | str, namespace: str) -> SioClient:
        client = SioClient(gw if isinstance(gw, str) else gw.url, namespace)
        self.clients.append(client)
        return client

    async def connect(self, gw: GatewayProcess | str, user_id: str, role: str, **kwargs: Any) -> SioClient:
        return await self.client(gw, ROLE_NAMESPACE[role]).connect(token=mint_token(user_id, role), **kwargs)


@pytest.fixture
async def stack(redis_url: str, gateway_factory: GatewayFactory) -> AsyncIterator[Stack]:
    redis = Redis.from_url(redis_url, decode_responses=True)
    s = Stack(redis_url, gateway_factory, redis)
    try:
        yield s
    finally:
        for client in s.clients:
            await client.disconnect()
        await redis.aclose()
