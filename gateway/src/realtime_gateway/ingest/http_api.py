"""``POST /api/events``: the Kafka envelope over HTTP, for backends without Kafka, embedded mode
and benchmarks. It drives the same dispatcher as the consumer.

Credential: ``Authorization: Bearer <token>`` where the token is a JWT with role ``service`` or
the configured API key (``RTG_API_KEY``; also accepted as ``X-API-Key``). Missing or invalid: 401;
a valid JWT of another role: 403; an invalid envelope: 400 with the reason. The body is one
envelope or a JSON array of up to :data:`MAX_BATCH` envelopes (validated all before any is applied).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from aiohttp import web

from realtime_gateway.auth.claims import Claims
from realtime_gateway.ingest.dispatch import Dispatcher
from realtime_gateway.ingest.envelope import EnvelopeError, Event, parse_event
from realtime_gateway.ingest.telemetry import IngestTelemetry

log = logging.getLogger(__name__)

MAX_BATCH: Final = 500
SERVICE_ROLE: Final = "service"

Verify = Callable[[str], Awaitable[Claims]]


def _error(status: int, code: str, message: str) -> web.Response:
    body = {"ok": False, "error": {"code": code, "message": message}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


class EventsApi:
    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        api_key: str | None,
        verify: Verify | None,
        telemetry: IngestTelemetry | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self.telemetry = telemetry or IngestTelemetry()
        self._api_key = api_key.encode() if api_key else None
        self._verify = verify

    async def _authenticate(self, request: web.Request) -> web.Response | None:
        """None when the caller holds a service credential, else the error response."""
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            credential = request.headers.get("X-API-Key", "")
        credential = credential.strip()
        if not credential:
            return _error(401, "AUTH_REQUIRED", "a service token or API key is required")
        if self._api_key is not None and hmac.compare_digest(credential.encode(), self._api_key):
            return None
        if self._verify is None or credential.count(".") != 2:
            return _error(401, "AUTH_INVALID", "invalid credential")
        try:
            claims = await self._verify(credential)
        except Exception as exc:  # the verifier's AuthError (bad signature, expired, ...)
            return _error(401, "AUTH_INVALID", str(exc) or "invalid token")
        if claims.role != SERVICE_ROLE:
            return _error(403, "FORBIDDEN", "the token's role is not 'service'")
        return None

    async def handle(self, request: web.Request) -> web.Response:
        refused = await self._authenticate(request)
        if refused is not None:
            return refused
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _error(400, "VALIDATION", f"invalid JSON: {exc}")
        batch = isinstance(body, list)
        items = body if batch else [body]
        if batch and not 0 < len(items) <= MAX_BATCH:
            return _error(400, "VALIDATION", f"a batch holds 1 to {MAX_BATCH} envelopes")
        events: list[Event] = []
        for index, item in enumerate(items):
            try:
                events.append(parse_event(item if isinstance(item, dict) else orjson.dumps(item)))
            except EnvelopeError as exc:
                self._dispatcher.stats.count_malformed("http")
                self.telemetry.record("http", "malformed")
                where = f"[{index}] " if batch else ""
                return _error(400, "VALIDATION", where + exc.reason)
        results = []
        for event in events:
            try:
                outcome = await self._dispatcher.handle(event)
            except Exception:
                self.telemetry.record("http", "failed")
                log.exception("event %s (%s) from the HTTP API failed", event.event_id, event.type)
                return _error(503, "INTERNAL", f"event {event.event_id} could not be delivered; retry it")
            self.telemetry.record("http", outcome.value)
            results.append({"eventId": event.event_id, "outcome": outcome.value})
        if batch:
            return _json({"ok": True, "results": results})
        return _json({"ok": True, **results[0]})
