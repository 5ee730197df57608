"""A socket ends with its token: ``error`` AUTH_EXPIRED, then a server disconnect, at exp + leeway."""

from __future__ import annotations

import time

import pytest

from tests.integration.gateway.helpers import location
from tests.support.deploy import until
from tests.support.gateway_fixtures import EmbeddedFactory, mint_token
from tests.support.sio import ConnectRefused, SioClient

pytestmark = pytest.mark.integration

LEEWAY_S = 1


async def test_socket_is_ended_when_its_token_expires(embedded_factory: EmbeddedFactory) -> None:
    gw = await embedded_factory(RTG_JWT_LEEWAY_SECONDS=LEEWAY_S)
    exp = int(time.time()) + 2
    short = await SioClient(gw.url, "/client").connect(token=mint_token("c-short", "customer", ttl=2))
    lasting = await SioClient(gw.url, "/porter").connect(token=mint_token("p-long", "porter", ttl=3600))
    reconnect_token = (await short.next("session"))["reconnectToken"]

    error = await short.next("error", timeout=exp + LEEWAY_S + 10 - time.time())
    ended_at = time.time()
    assert error == {
        "code": "AUTH_EXPIRED",
        "message": "token expired: connect again with a fresh token",
        "event": None,
    }
    # Not before the last moment a connect with this token would still be accepted.
    assert ended_at >= exp + LEEWAY_S - 0.05
    assert await short.next("disconnect", timeout=5) == "server disconnect"  # python-socketio's name
    await until(
        lambda: len(gw.gateway.handlers.conns) == 1, within=5, what="the ended socket is closed on the server"
    )

    # The other socket, on a token valid for an hour, is untouched and still served.
    assert lasting.connected and lasting.pending("error") == []
    ack = await lasting.call("location:update", location())
    assert ack.get("ok") is True, ack

    # The session cannot be resumed past the token either; a fresh token connects.
    with pytest.raises(ConnectRefused) as refused:
        await SioClient(gw.url, "/client").connect(auth={"reconnectToken": reconnect_token})
    # EXPIRED while the store still holds the grant (its TTL ends with the token), then unknown.
    assert refused.value.code in ("AUTH_EXPIRED", "AUTH_INVALID")
    again = await SioClient(gw.url, "/client").connect(token=mint_token("c-short", "customer", ttl=3600))
    assert (await again.next("session"))["userId"] == "c-short"
    await again.disconnect()
    await lasting.disconnect()


async def test_a_socket_gone_before_its_expiry_is_not_touched(embedded_factory: EmbeddedFactory) -> None:
    gw = await embedded_factory(RTG_JWT_LEEWAY_SECONDS=0)
    gone = await SioClient(gw.url, "/client").connect(token=mint_token("c-gone", "customer", ttl=1))
    await gone.disconnect()
    watcher = await SioClient(gw.url, "/client").connect(token=mint_token("c-next", "customer", ttl=2))
    await watcher.next("error", timeout=10)
    # The departed socket's deadline came first and was skipped: exactly one socket was ended.
    assert gw.gateway.handlers.conns == {}
    expiry = next(o for o in gw.gateway.handlers.observers if type(o).__name__ == "SessionExpiry")
    assert expiry.expired == 1
