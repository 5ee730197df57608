"""One user, many sockets: all receive; one leaving leaves the others working; no keys linger."""

from __future__ import annotations

import pytest

from tests.integration.gateway.conftest import Deployer, uid
from tests.integration.gateway.helpers import location
from tests.support.deploy import eventually

pytestmark = pytest.mark.integration


async def test_two_devices_of_one_user(deployer: Deployer, single_kind: str) -> None:
    d = await deployer(single_kind)
    customer, porter = uid("cust"), uid("porter")
    order_id = await d.order(customer, porter)
    phone = await d.connect(customer, "customer")
    laptop = await d.connect(customer, "customer")
    sids = {phone.sio.get_sid("/client"), laptop.sio.get_sid("/client")}
    for device in (phone, laptop):
        assert (await device.call("order:subscribe", {"orderId": order_id}))["ok"] is True
    if d.redis is not None:
        assert await d.redis.smembers(f"user:socket:{{{customer}}}") == sids
        for sid in sids:
            assert (await d.redis.hgetall(f"socket:user:{{{sid}}}"))["userId"] == customer
            assert 0 < await d.redis.ttl(f"socket:user:{{{sid}}}") <= 86400
    p = await d.connect(porter, "porter")
    assert (await p.call("location:update", location(lat=1.0)))["ok"] is True
    assert (await phone.next("porter:location"))["lat"] == 1.0
    assert (await laptop.next("porter:location"))["lat"] == 1.0

    await phone.disconnect()
    assert (await p.call("location:update", location(lat=2.0)))["ok"] is True
    assert (await laptop.next("porter:location"))["lat"] == 2.0
    assert (await laptop.call("order:unsubscribe", {"orderId": order_id}))["ok"] is True
    assert (await laptop.call("order:subscribe", {"orderId": order_id}))["ok"] is True
    await laptop.disconnect()

    if d.redis is None:
        sessions = d.embedded.gateway.stores.sessions

        async def no_sockets_left() -> bool:
            return bool(await sessions.sockets_of_user(customer) == set())

        await eventually(no_sockets_left, within=5, what="the user's sockets to be forgotten")
        return

    async def leftovers() -> list[str]:
        # Keys naming the user or one of their sockets that would live forever: TTL-bound keys
        # (reconnect tokens, rate-limit buckets, last-seen) expire on their own.
        names = [k async for k in d.redis.scan_iter(match="*")]
        mine = [k for k in names if customer in k or any(sid in k for sid in sids)]
        return [k for k in mine if await d.redis.ttl(k) == -1]

    async def clean() -> bool:
        # The server removes a socket's records after the client saw the disconnect, so wait for
        # both: no key without a TTL, and no session record of these sockets at all.
        gone = await d.redis.exists(
            f"user:socket:{{{customer}}}", *(f"socket:user:{{{sid}}}" for sid in sids)
        )
        return gone == 0 and await leftovers() == []

    try:
        await eventually(clean, within=5, what="the user's keys to be removed")
    except AssertionError:
        raise AssertionError(f"keys left without a TTL: {await leftovers()}") from None
    assert (
        await d.redis.exists(f"user:socket:{{{customer}}}", *(f"socket:user:{{{sid}}}" for sid in sids)) == 0
    )
    assert await d.redis.exists(f"order:subscription:{{{order_id}}}") == 0
