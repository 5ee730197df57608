"""Hypothesis-generated garbage on every client event: an error ack each time, never an unhandled
exception, the socket stays up, and nothing is stored."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime_contract import Env
from tests.integration.gateway.conftest import Deployer, uid
from tests.integration.gateway.helpers import location
from tests.support.sio import ConnectRefused, SioClient

pytestmark = pytest.mark.integration

# INTERNAL is deliberately absent: garbage must be refused by validation, not by a caught bug.
CODES = {"VALIDATION", "FORBIDDEN", "NOT_FOUND", "CONFLICT", "EXPIRED", "LIMIT_EXCEEDED"}
# Hundreds of calls in seconds: lift the per-user rate limits, which are tested elsewhere.
NO_RATE_LIMITS = {
    Env.RATE_LIMIT_GENERAL: "1000000/60s",
    Env.RATE_LIMIT_LOCATION: "1000000/60s",
    Env.RATE_LIMIT_CHAT: "1000000/60s",
}
EXAMPLES_PER_EVENT = 50

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
ids = st.text(max_size=300) | json_values
near_order = st.fixed_dictionaries({"orderId": ids}, optional={"extra": json_values})
near_location = st.fixed_dictionaries(
    {},
    optional={
        "lat": scalars | st.floats(min_value=-1000, max_value=1000),
        "lng": scalars | st.floats(min_value=-1000, max_value=1000),
        "heading": scalars,
        "speed": scalars,
        "accuracy": scalars,
        "timestamp": scalars,
    },
)
near_chat = st.fixed_dictionaries({}, optional={"orderId": ids, "text": ids, "clientMessageId": ids})
near_offer = st.fixed_dictionaries({}, optional={"offerId": ids, "reason": json_values})
anything = json_values | st.binary(max_size=16) | st.tuples(json_values, json_values)

EVENTS: dict[str, Any] = {
    "order:subscribe": near_order | anything,
    "order:unsubscribe": near_order | anything,
    "location:update": near_location | anything,
    "chat:message:send": near_chat | anything,
    "chat:typing": near_order | anything,
    "job:offer:accept": near_offer | anything,
    "job:offer:reject": near_offer | anything,
    "no:such:event": anything,
}
# A well-formed unsubscribe of an order one is not subscribed to is a harmless no-op.
MAY_SUCCEED = {"order:unsubscribe"}


def fuzz(client: SioClient, event: str, loop: asyncio.AbstractEventLoop) -> list[dict[str, Any]]:
    """Run hypothesis in a worker thread; each example is one ack round trip on the test's loop."""
    acks: list[dict[str, Any]] = []

    @settings(
        max_examples=EXAMPLES_PER_EVENT,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(payload=EVENTS[event])
    def check(payload: Any) -> None:
        ack = asyncio.run_coroutine_threadsafe(client.call(event, payload, timeout=5), loop).result(10)
        assert isinstance(ack, dict), ack
        if ack.get("ok") is True:
            assert event in MAY_SUCCEED, (payload, ack)
        else:
            assert ack.get("ok") is False and ack["error"]["code"] in CODES, (payload, ack)
            assert isinstance(ack["error"]["message"], str)
        acks.append(ack)

    check()
    return acks


@pytest.mark.parametrize("role", ["customer", "porter"])
async def test_garbage_on_every_event(deployer: Deployer, single_kind: str, role: str) -> None:
    d = await deployer(single_kind, **NO_RATE_LIMITS)
    user = uid(role)
    client = await d.connect(user, role)
    await client.next("session")
    loop = asyncio.get_running_loop()
    failures = 0
    for event in EVENTS:
        acks = await asyncio.to_thread(fuzz, client, event, loop)
        failures += sum(1 for ack in acks if ack.get("ok") is not True)
    # Every failed ack was mirrored by an `error` event; the socket is still up and usable.
    assert client.connected
    errors = client.pending("error")
    assert len(errors) == failures and all(e["code"] in CODES and "event" in e for e in errors)
    assert client.pending("disconnect") == []

    # Nothing was stored by all those rejected calls.
    if d.redis is not None:
        assert [k async for k in d.redis.scan_iter(match="order:subscription:*")] == []
        assert await d.redis.exists(f"porter:location:{{{user}}}") == 0
    else:
        gateway = d.embedded.gateway
        assert all(not conn.orders for conn in gateway.handlers.conns.values())
        assert await gateway.stores.locations.get(user) is None

    # And a valid call still works afterwards.
    if role == "porter":
        assert (await client.call("location:update", location()))["ok"] is True
    else:
        order_id = await d.order(user)
        assert (await client.call("order:subscribe", {"orderId": order_id}))["ok"] is True


def fuzz_connect(url: str, loop: asyncio.AbstractEventLoop) -> list[str]:
    codes: list[str] = []

    @settings(
        max_examples=EXAMPLES_PER_EVENT, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(auth=json_values | st.fixed_dictionaries({}, optional={"token": ids, "reconnectToken": ids}))
    def check(auth: Any) -> None:
        async def attempt() -> str:
            client = SioClient(url, "/client")
            try:
                await client.connect(auth=auth if isinstance(auth, dict) else {"token": auth})
            except ConnectRefused as refused:
                return str(refused.code)
            await client.disconnect()
            return "connected"

        code = asyncio.run_coroutine_threadsafe(attempt(), loop).result(15)
        assert code in {"AUTH_REQUIRED", "AUTH_INVALID"}, (auth, code)
        codes.append(code)

    check()
    return codes


async def test_garbage_connect_auth(deployer: Deployer, single_kind: str) -> None:
    d = await deployer(single_kind, **{Env.CONNECT_RATE_LIMIT: "1000000/60s"})
    codes = await asyncio.to_thread(fuzz_connect, d.urls[0], asyncio.get_running_loop())
    assert len(codes) == EXAMPLES_PER_EVENT
    # The gateway still accepts a proper token afterwards.
    client = await d.connect(uid("cust"), "customer")
    assert (await client.next("session"))["role"] == "customer"
