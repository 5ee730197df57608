"""``realtime-gateway emit-event``: send one contract event by hand, to Kafka or to the HTTP API.

Without ``--to`` it goes to Kafka when ``RTG_KAFKA_BOOTSTRAP_SERVERS`` is set, else to
``POST /api/events`` of a gateway (default: the embedded one on ``RTG_PORT``), authenticated with
``--api-key`` / ``RTG_API_KEY`` or a service JWT minted from the configured secret.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Final

import orjson

from realtime_contract import EVENTS_API_PATH
from realtime_gateway.ingest.envelope import EnvelopeError, build_envelope
from realtime_gateway.ingest.kafka_config import kafka_config_from_settings
from realtime_gateway.settings import Settings

# Topic and record key of each type (design.md §3 "Kafka").
ROUTES: Final[dict[str, tuple[str, str]]] = {
    "order.created": ("orderEvents", "orderId"),
    "order.assigned": ("orderEvents", "orderId"),
    "order.status_changed": ("orderEvents", "orderId"),
    "order.completed": ("orderEvents", "orderId"),
    "order.cancelled": ("orderEvents", "orderId"),
    "job.offer.created": ("orderEvents", "orderId"),
    "notification.created": ("notificationEvents", "userId"),
    "porter.availability_changed": ("porterEvents", "porterId"),
    "porter.location.sampled": ("porterEvents", "porterId"),
    "job.offer.accepted": ("porterEvents", "porterId"),
    "job.offer.rejected": ("porterEvents", "porterId"),
    "chat.message.sent": ("chatEvents", "orderId"),
}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "emit-event",
        help="send one contract event to Kafka or to a gateway's POST /api/events",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("type", choices=sorted(ROUTES), help="event type")
    p.add_argument("payload", help='payload as JSON, e.g. \'{"orderId": "o1", "status": "picked_up"}\'')
    p.add_argument("--to", choices=["kafka", "http"], help="default: kafka if configured, else http")
    p.add_argument("--url", help="gateway base URL for --to http (default: http://127.0.0.1:$RTG_PORT)")
    p.add_argument("--api-key", help="service API key for --to http (default: RTG_API_KEY)")
    p.add_argument("--event-id", help="eventId (default: a new UUID); reuse one to test dedup")
    p.add_argument("--correlation-id", help="correlationId (default: a new UUID)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        payload = orjson.loads(args.payload)
        envelope = build_envelope(
            args.type, payload, event_id=args.event_id, correlation_id=args.correlation_id
        )
    except orjson.JSONDecodeError as exc:
        print(f"realtime-gateway: payload is not JSON: {exc}", file=sys.stderr)
        return 2
    except EnvelopeError as exc:
        print(f"realtime-gateway: invalid {args.type}: {exc.reason}", file=sys.stderr)
        return 2
    target = args.to or ("kafka" if settings.kafka_bootstrap_servers else "http")
    try:
        if target == "kafka":
            result = asyncio.run(_to_kafka(settings, args.type, envelope))
        else:
            result = asyncio.run(_to_http(settings, args, envelope))
    except Exception as exc:
        print(f"realtime-gateway: sending to {target} failed: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps({"sent": envelope, "to": target, "result": result}).decode())
    return 0


async def _to_kafka(settings: Settings, event_type: str, envelope: dict[str, Any]) -> str:
    from realtime_gateway.ingest.producer import KafkaEventSink

    config = kafka_config_from_settings(settings)
    if config is None:
        raise RuntimeError("RTG_KAFKA_BOOTSTRAP_SERVERS is not set")
    topic_key, key_field = ROUTES[event_type]
    sink = KafkaEventSink(config)
    sink.start()
    try:
        await sink.send(topic_key, str(envelope["payload"][key_field]), envelope)
    finally:
        await sink.stop()
    return f"{config.topic(topic_key)} key={envelope['payload'][key_field]}"


async def _to_http(settings: Settings, args: argparse.Namespace, envelope: dict[str, Any]) -> Any:
    import aiohttp

    from realtime_gateway.auth.verifier import mint_dev_token

    url = (args.url or f"http://127.0.0.1:{settings.port}").rstrip("/") + EVENTS_API_PATH
    api_key = args.api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    if api_key:
        credential = api_key
    elif (secret := settings.effective_jwt_secret) is not None:
        extra: dict[str, Any] = {}
        if settings.jwt_issuer:
            extra["iss"] = settings.jwt_issuer
        if settings.jwt_audience:
            extra["aud"] = settings.jwt_audience[0]
        credential = mint_dev_token(secret, "emit-event", "service", ttl=60, **extra)
    else:
        raise RuntimeError("no credential: pass --api-key, or set RTG_API_KEY or RTG_JWT_SECRET")
    headers = {"Authorization": f"Bearer {credential}"}
    async with aiohttp.ClientSession() as session, session.post(url, json=envelope, headers=headers) as resp:
        body = await resp.json(content_type=None)
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {body}")
        return body
