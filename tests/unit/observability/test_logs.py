from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

from realtime_gateway.observability.logs import (
    REDACTED,
    JsonFormatter,
    configure_logging,
    correlation,
    current_correlation_id,
    parse_level,
    redact,
    redact_text,
)

pytestmark = pytest.mark.unit

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEiLCJyb2xlIjoicG9ydGVyIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


@pytest.fixture
def capture() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    logger = logging.getLogger("test.observability.json")
    logger.handlers.clear()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(instance="gw-1"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger, stream


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_line(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    logger.info("first\nwith a newline", extra={"orderId": "o-1", "count": 3})
    logger.warning("second")
    out = lines(stream)
    assert len(stream.getvalue().splitlines()) == 2
    assert out[0]["msg"] == "first\nwith a newline"
    assert out[0]["level"] == "info" and out[1]["level"] == "warning"
    assert out[0]["logger"] == "test.observability.json"
    assert out[0]["orderId"] == "o-1" and out[0]["count"] == 3
    assert out[0]["instance"] == "gw-1" and out[0]["service"] == "realtime-gateway"
    assert str(out[0]["ts"]).endswith("Z")
    assert "correlationId" not in out[0]


def test_exception_is_one_line_too(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    try:
        raise RuntimeError(f"bad token {JWT}")
    except RuntimeError:
        logger.exception("handler failed")
    (entry,) = lines(stream)
    assert "RuntimeError" in str(entry["exc"])
    assert JWT not in stream.getvalue()


async def test_correlation_id_on_every_record_of_a_flow(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture

    async def flow(cid: str) -> None:
        with correlation(cid):
            logger.info("start")
            await asyncio.sleep(0)
            # A task spawned inside the flow inherits the id.
            await asyncio.create_task(asyncio.to_thread(lambda: None))
            await asyncio.create_task(_log_child(logger))
            logger.info("end")

    await asyncio.gather(flow("cid-a"), flow("cid-b"))
    out = lines(stream)
    assert len(out) == 6
    by_cid: dict[object, int] = {}
    for entry in out:
        by_cid[entry["correlationId"]] = by_cid.get(entry["correlationId"], 0) + 1
    assert by_cid == {"cid-a": 3, "cid-b": 3}
    assert current_correlation_id() is None


async def _log_child(logger: logging.Logger) -> None:
    logger.info("child")


def test_fresh_correlation_id_when_none_given() -> None:
    with correlation(None) as cid:
        assert cid and current_correlation_id() == cid
    with correlation("") as cid2:
        assert cid2 and cid2 != cid


def test_redacts_tokens_text_coordinates_and_pii(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    payload = {
        "orderId": "o-7",
        "text": "meet me at the back door",
        "token": JWT,
        "auth": {"token": JWT},
        "reconnectToken": "rt-secret-value",
        "lat": 52.520008,
        "lng": 13.404954,
        "nested": [{"email": "jane@example.com", "phone": "+49 30 1234567"}],
    }
    logger.info(
        "connect from jane@example.com with Bearer %s phone +49 (30) 123-4567 token=%s",
        JWT,
        "abc123",
        extra={"payload": payload, "authorization": f"Bearer {JWT}"},
    )
    raw = stream.getvalue()
    (entry,) = lines(stream)
    secrets = (JWT, "meet me at the back door", "rt-secret-value", "jane@example.com", "1234567", "abc123")
    for secret in secrets:
        assert secret not in raw, secret
    assert "52.520008" not in raw and "13.404954" not in raw
    p = entry["payload"]
    assert isinstance(p, dict)
    assert p["orderId"] == "o-7"
    assert p["text"] == REDACTED and p["token"] == REDACTED and p["auth"] == REDACTED
    assert p["lat"] == 52.52 and p["lng"] == 13.4
    assert entry["authorization"] == REDACTED


def test_redact_helpers() -> None:
    scrubbed = redact_text(f"Authorization: Bearer {JWT}")
    assert JWT not in scrubbed and scrubbed.startswith("Authorization: ") and REDACTED in scrubbed
    assert redact_text(f"Bearer {JWT}") == f"Bearer {REDACTED}"
    assert redact_text('{"token": "x.y.z"}') == f'{{"token": "{REDACTED}"}}'
    assert redact_text("order o-1 status delivered") == "order o-1 status delivered"
    assert redact({"latitude": "somewhere"}) == {"latitude": REDACTED}
    assert redact({"apiKey": "k", "api_key": "k", "x-api-key": "k"}) == {
        "apiKey": REDACTED,
        "api_key": REDACTED,
        "x-api-key": REDACTED,
    }
    # Timestamps and ids are not phone numbers.
    assert redact_text("at 1732769400000 for order 0f3a-11") == "at 1732769400000 for order 0f3a-11"


@pytest.mark.parametrize(
    ("name", "level"),
    [("debug", 10), ("INFO", 20), ("warn", 30), ("warning", 30), ("error", 40)],
)
def test_levels(name: str, level: int) -> None:
    assert parse_level(name) == level


def test_unknown_level_names_the_choices() -> None:
    with pytest.raises(ValueError, match="debug"):
        parse_level("loud")


def test_configure_logging_filters_by_level() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("warn", stream=stream, instance="gw-2")
        logging.getLogger("realtime_gateway.x").info("hidden")
        logging.getLogger("realtime_gateway.x").error("shown")
        out = lines(stream)
        assert [e["msg"] for e in out] == ["shown"]
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def test_json_embedded_in_a_message_is_redacted_too() -> None:
    dumped = (
        'Sending batch b\'{"eventId":"e1","payload":{"orderId":"o-1","text":"meet me \\\\"here\\\\"",'
        '"lat":52.520008,"token":"abc"}}\''
    )
    out = redact_text(dumped)
    assert "meet me" not in out and "abc" not in out and "52.520008" not in out
    assert '"orderId":"o-1"' in out and '"lat":52.52' in out and f'"text":"{REDACTED}"' in out


def test_library_debug_output_stays_off_at_debug_level() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("debug", stream=stream)
        logging.getLogger("aiokafka.producer").debug("raw record b'...'")
        logging.getLogger("realtime_gateway.x").debug("ours")
        assert [e["msg"] for e in lines(stream)] == ["ours"]
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        for name in ("engineio", "socketio", "aiohttp", "aiokafka", "kafka", "redis"):
            logging.getLogger(name).setLevel(logging.NOTSET)
