"""A chat message traced end to end: socket event → Kafka → consumer → emit, exported over OTLP/HTTP
to a receiver in this test, plus the flow's log lines (one correlation id, nothing secret)."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from realtime_contract import Env
from tests.integration.protection.conftest import Stack, uid
from tests.support.kafka_server import KafkaBroker
from tests.support.procs import free_port

pytestmark = pytest.mark.integration

SECRET_TEXT = "meet me at the blue door, code 4711"


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    instance: str


class OtlpReceiver:
    """Accepts ``POST /v1/traces`` (protobuf ExportTraceServiceRequest) and keeps the spans."""

    def __init__(self) -> None:
        self.port = free_port()
        self.spans: list[Span] = []
        self.requests = 0
        self._runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert request.content_type == "application/x-protobuf", request.content_type
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        self.requests += 1
        for rs in export.resource_spans:
            resource = {a.key: a.value.string_value for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    attrs: dict[str, Any] = {}
                    for a in s.attributes:
                        v = a.value
                        attrs[a.key] = v.string_value if v.HasField("string_value") else v.int_value
                    self.spans.append(
                        Span(
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            s.name,
                            s.kind,
                            attrs,
                            resource.get("service.instance.id", ""),
                        )
                    )
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def start(self) -> OtlpReceiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def otlp() -> AsyncIterator[OtlpReceiver]:
    receiver = await OtlpReceiver().start()
    yield receiver
    await receiver.stop()


def log_entries(path: Path) -> list[dict[str, Any]]:
    entries = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    return entries


async def test_chat_message_is_one_trace_with_correct_parentage(
    stack: Stack, kafka_broker: KafkaBroker, otlp: OtlpReceiver
) -> None:
    suffix = uuid.uuid4().hex[:8]
    env = {
        Env.KAFKA_BOOTSTRAP_SERVERS: kafka_broker.bootstrap,
        Env.KAFKA_CONSUMER_GROUP: f"trace-{suffix}",
        Env.KAFKA_TOPIC_ORDER_EVENTS: f"order-{suffix}",
        Env.KAFKA_TOPIC_PORTER_EVENTS: f"porter-{suffix}",
        Env.KAFKA_TOPIC_NOTIFICATION_EVENTS: f"notification-{suffix}",
        Env.KAFKA_TOPIC_CHAT_EVENTS: f"chat-{suffix}",
        Env.KAFKA_AUTO_CREATE_TOPICS: "true",
        Env.KAFKA_AUTO_OFFSET_RESET: "earliest",
        Env.OTLP_ENDPOINT: otlp.endpoint,
        Env.LOG_LEVEL: "debug",
    }
    chat_topic = f"chat-{suffix}"
    a = await asyncio.to_thread(stack.start, "trace-a", **env)
    b = await asyncio.to_thread(stack.start, "trace-b", **env)
    customer, porter = uid("cust"), uid("porter")
    order = await stack.order(customer, porter)
    c = await stack.connect(b, customer, "customer")
    p = await stack.connect(a, porter, "porter")
    for client in (c, p):
        assert (await client.call("order:subscribe", {"orderId": order}))["ok"] is True

    ack = await p.call(
        "chat:message:send", {"orderId": order, "text": SECRET_TEXT, "clientMessageId": uid("m")}, timeout=20
    )
    assert ack["ok"] is True, ack
    received = await c.next("chat:message", timeout=20)
    assert received["text"] == SECRET_TEXT and received["messageId"] == ack["messageId"]

    # The socket span of the send, then the rest of its trace.
    deadline = time.monotonic() + 20
    while True:
        roots = [s for s in otlp.spans if s.name == "socket chat:message:send"]
        trace_id = roots[0].trace_id if roots else None
        flow = [s for s in otlp.spans if s.trace_id == trace_id]
        names = {s.name for s in flow}
        if {f"{chat_topic} process", "emit chat:message"} <= names:
            break
        assert time.monotonic() < deadline, f"spans so far: {[(s.name, s.trace_id) for s in otlp.spans]}"
        await asyncio.sleep(0.2)

    (root,) = roots
    assert root.parent_id == "" and root.instance == "trace-a"
    by_id = {s.span_id: s for s in flow}

    def ancestry(span: Span) -> list[str]:
        chain = [span.name]
        while span.parent_id:
            span = by_id[span.parent_id]
            chain.append(span.name)
        return chain

    consume = next(s for s in flow if s.name == f"{chat_topic} process")
    chain = ancestry(consume)
    assert chain[-1] == "socket chat:message:send", chain
    # With a producer span it sits between the socket event and the consumer.
    assert chain[1:-1] in ([], [f"{chat_topic} publish"]), chain
    emits = [s for s in flow if s.name == "emit chat:message"]
    assert emits and all(by_id[e.parent_id].name == f"{chat_topic} process" for e in emits)
    # Span kinds: SERVER for the socket event, CONSUMER for the record (OTLP enum values).
    assert root.kind == 2 and consume.kind == 5
    cid = root.attributes["realtime.correlation_id"]
    assert consume.attributes["realtime.correlation_id"] == cid
    assert consume.attributes["messaging.destination.name"] == chat_topic

    # Logs: the flow's lines on both sides carry the correlation id; nothing secret anywhere.
    consumer_instance = consume.instance
    logs = {name: Path(gw.proc.log_path) for name, gw in (("trace-a", a), ("trace-b", b))}

    def flow_lines() -> dict[str, list[dict[str, Any]]]:
        return {
            n: [e for e in log_entries(path) if e.get("correlationId") == cid] for n, path in logs.items()
        }

    deadline = time.monotonic() + 10
    while not (flow_lines()["trace-a"] and flow_lines()[consumer_instance]):
        assert time.monotonic() < deadline, "no log line of the flow"
        await asyncio.sleep(0.1)
    lines = flow_lines()
    assert any(e.get("event") == "chat:message:send" for e in lines["trace-a"])
    assert any(e.get("traceId") == root.trace_id for e in lines[consumer_instance])
    for path in logs.values():
        text = path.read_text()
        assert SECRET_TEXT not in text and "blue door" not in text
        assert "eyJ" not in text  # no JWT (every token starts with a base64 '{"')
