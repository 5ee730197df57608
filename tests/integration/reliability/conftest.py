"""Helpers for the reliability tests: the gateway deployments of tests/integration/gateway, a
client that logs every event in arrival order, and the server event API as the backend."""

from __future__ import annotations

from typing import Any

import aiohttp

from realtime_contract import EVENTS_API_PATH
from realtime_gateway.ingest.envelope import build_envelope
from tests.integration.gateway.conftest import (
    ROLE_NAMESPACE,
    Deployer,
    Deployment,
    deployer,
    multi_kind,
    single_kind,
    uid,
)
from tests.support.gateway_fixtures import mint_token
from tests.support.sio import SioClient

# Fixtures of the gateway deployments, re-exported for this directory's tests.
__all__ = ["Deployer", "Deployment", "deployer", "multi_kind", "single_kind", "uid"]

SERVICE_TOKEN_SUBJECT = "backend"


class LoggingClient(SioClient):
    """A SioClient that also keeps ``(event, data)`` of everything in arrival order."""

    def __init__(self, url: str, namespace: str) -> None:
        super().__init__(url, namespace)
        self.log: list[tuple[str, Any]] = []

    async def _on_any(self, event: str, *args: Any) -> None:
        self.log.append((event, args[0] if len(args) == 1 else list(args)))
        await super()._on_any(event, *args)

    def events(self, *names: str) -> list[tuple[str, Any]]:
        return [(e, d) for e, d in self.log if e in names]


async def connect_logging(
    d: Deployment, user_id: str, role: str, instance: int = 0, auth: dict[str, Any] | None = None
) -> LoggingClient:
    client = LoggingClient(d.urls[instance], ROLE_NAMESPACE[role])
    d.clients.append(client)
    if auth is None:
        auth = {"token": mint_token(user_id, role)}
    await client.connect(auth=auth)
    return client


def status_event(order_id: str, seq: int) -> dict[str, Any]:
    return build_envelope("order.status_changed", {"orderId": order_id, "status": f"s{seq}", "seq": seq})


def notification_event(user_id: str, n: int) -> dict[str, Any]:
    return build_envelope(
        "notification.created",
        {"userId": user_id, "notificationId": f"n-{n}", "title": f"t{n}", "body": "b", "data": {"n": n}},
    )


async def post_events(url: str, envelopes: list[dict[str, Any]]) -> dict[str, Any]:
    """POST /api/events with a service token (batches of up to 500)."""
    headers = {"Authorization": f"Bearer {mint_token(SERVICE_TOKEN_SUBJECT, 'service')}"}
    result: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        for start in range(0, len(envelopes), 500):
            batch = envelopes[start : start + 500]
            async with session.post(url + EVENTS_API_PATH, json=batch, headers=headers) as resp:
                result = await resp.json()
                assert resp.status == 200, result
    return result
