"""Per-user token buckets through real gateway processes sharing one Redis."""

from __future__ import annotations

import asyncio
import time

import pytest

from realtime_contract import Env
from tests.integration.protection.conftest import Stack, ascrape, scrape, uid
from tests.support.gateway_fixtures import EmbeddedFactory, mint_token
from tests.support.sio import SioClient

pytestmark = pytest.mark.integration


def codes(acks: list[dict[str, object]]) -> list[str]:
    return ["ok" if a.get("ok") is True else str(a["error"]["code"]) for a in acks]  # type: ignore[index]


async def test_flood_of_120_from_one_user_on_two_instances_gets_exactly_100(stack: Stack) -> None:
    a, b = stack.start("rl-a"), stack.start("rl-b")
    user = uid("cust")
    ca = await stack.connect(a, user, "customer")
    cb = await stack.connect(b, user, "customer")
    # order:unsubscribe always succeeds for a known user: a pure "general" event.
    calls = [
        (ca if i % 2 else cb).call("order:unsubscribe", {"orderId": f"o-{i}"}, timeout=10) for i in range(120)
    ]
    started = time.monotonic()
    acks = await asyncio.gather(*calls)
    elapsed = time.monotonic() - started
    result = codes(acks)
    # At 100/60 s a token refills every 600 ms: a flood faster than that gets exactly the burst
    # of 100 (the usual case); a slower one (a loaded machine) at most one more per 600 ms.
    refilled = int(elapsed / 0.6)
    assert 100 <= result.count("ok") <= 100 + refilled, (elapsed, result)
    assert result.count("ok") + result.count("RATE_LIMITED") == 120
    if refilled == 0:
        assert result.count("ok") == 100
    limited = [x for x in acks if x.get("ok") is not True]
    assert all(0 < x["error"]["retryAfterMs"] <= 600 for x in limited)
    # Each refusal is mirrored by an `error` event on the socket that sent it.
    errors: list[dict[str, object]] = []
    for client in (ca, cb):
        while len(errors) < 120 - result.count("ok"):
            try:
                errors.append(await client.next("error", timeout=0.5))
            except AssertionError:
                break
    assert len(errors) == 120 - result.count("ok") and {e["code"] for e in errors} == {"RATE_LIMITED"}
    assert {e["event"] for e in errors} == {"order:unsubscribe"}
    # Both instances counted their share of the refusals.
    total = sum(scrape(g.url).value("realtime_rate_limited_total", **{"class": "general"}) for g in (a, b))
    assert total == 120 - result.count("ok")


async def test_embedded_mode_limits_in_memory(embedded_factory: EmbeddedFactory) -> None:
    embedded = await embedded_factory(**{Env.RATE_LIMIT_GENERAL: "3/60s"})
    user = uid("cust")
    c = SioClient(embedded.url, "/client")
    await c.connect(token=mint_token(user, "customer"))
    try:
        acks = [await c.call("order:unsubscribe", {"orderId": "x"}) for _ in range(4)]
        assert codes(acks) == ["ok", "ok", "ok", "RATE_LIMITED"]
        # A second device of the same user shares the bucket.
        other = SioClient(embedded.url, "/client")
        await other.connect(token=mint_token(user, "customer"))
        try:
            assert codes([await other.call("order:unsubscribe", {"orderId": "x"})]) == ["RATE_LIMITED"]
        finally:
            await other.disconnect()
        m = await ascrape(embedded.url)
        assert m.value("realtime_rate_limited_total", **{"class": "general"}) == 2
    finally:
        await c.disconnect()


async def test_location_and_chat_buckets_are_independent_and_refill(stack: Stack) -> None:
    gw = stack.start(
        "rl-classes",
        **{
            Env.RATE_LIMIT_GENERAL: "3/1s",
            Env.RATE_LIMIT_LOCATION: "5/60s",
            Env.RATE_LIMIT_CHAT: "2/60s",
        },
    )
    porter = uid("porter")
    order = await stack.order(uid("cust"), porter)
    c = await stack.connect(gw, porter, "porter")

    def location() -> dict[str, object]:
        return {"lat": 52.52, "lng": 13.40, "timestamp": int(time.time() * 1000)}

    general = [await c.call("order:unsubscribe", {"orderId": "x"}) for _ in range(4)]
    assert codes(general) == ["ok", "ok", "ok", "RATE_LIMITED"]
    # The general bucket is empty, yet location and chat still have their own tokens.
    loc = [await c.call("location:update", location()) for _ in range(6)]
    assert codes(loc) == ["ok"] * 5 + ["RATE_LIMITED"]
    chat = [
        await c.call("chat:message:send", {"orderId": order, "text": "hi", "clientMessageId": uid("m")})
        for _ in range(3)
    ]
    assert "RATE_LIMITED" not in codes(chat)[:2]
    assert codes(chat)[2] == "RATE_LIMITED"
    # The general bucket (3 per second) refills: one token after ~333 ms.
    retry_ms = general[3]["error"]["retryAfterMs"]  # type: ignore[index]
    assert 0 < retry_ms <= 334
    deadline = time.monotonic() + 3
    while (await c.call("order:unsubscribe", {"orderId": "x"})).get("ok") is not True:
        assert time.monotonic() < deadline, "general bucket never refilled"
        await asyncio.sleep(0.05)
    m = scrape(gw.url)
    assert m.value("realtime_rate_limited_total", **{"class": "location"}) == 1
    assert m.value("realtime_rate_limited_total", **{"class": "chat"}) == 1
    assert m.value("realtime_rate_limited_total", **{"class": "general"}) >= 1
    # Refused location updates were neither stored nor counted as accepted.
    assert m.value("realtime_location_updates_total") == 5
