"""The presence heartbeat on real Redis: every socket refreshed, in slices, on the lean connection."""

from __future__ import annotations

import pytest

from realtime_gateway.presence.store import HEARTBEAT_SLICE, RedisPresence, now_ms, sockets_key
from realtime_gateway.settings import parse_redis_url
from realtime_gateway.state.connect import RedisHandles, open_redis
from realtime_gateway.state.multiplex import Multiplexer
from tests.support.redis_server import RedisCluster

pytestmark = pytest.mark.integration

SOCKETS = 2 * HEARTBEAT_SLICE + 17  # three slices, the last one short


def _sockets(tag: str) -> list[tuple[str, str]]:
    return [(f"{tag}-user-{i}", f"{tag}-sid-{i}") for i in range(SOCKETS)]


async def _check_refreshed(handles: RedisHandles, sockets: list[tuple[str, str]], since: int) -> None:
    for user_id, sid in sockets:
        key = sockets_key(user_id)
        score = await handles.commands.zscore(key, sid)
        assert score is not None and score >= since + 15_000, (key, score)
        assert await handles.commands.pttl(key) > 15_000


@pytest.mark.parametrize("fast", [True, False], ids=["lean-connection", "redis-py"])
async def test_every_socket_is_refreshed_in_standalone(redis_url: str, fast: bool) -> None:
    handles = open_redis("standalone", parse_redis_url(redis_url))
    try:
        assert handles.fast is not None
        presence = RedisPresence(handles.commands, fast=handles.fast if fast else None)
        sockets = _sockets("standalone")
        since = now_ms()
        # The lean connection is not open yet: the first command opens it.
        await presence.refresh(sockets)
        await _check_refreshed(handles, sockets, since)
        mux = handles.fast
        assert isinstance(mux, Multiplexer)
        # Three slices on the lean connection: a few writes, not one per command.
        assert (0 < mux.writes <= 12) if fast else mux.writes == 0
    finally:
        await handles.aclose()


async def test_every_socket_is_refreshed_across_cluster_nodes(redis_cluster: RedisCluster) -> None:
    url = "redis://" + ",".join(f"{h}:{p}" for h, p in redis_cluster.startup_nodes)
    handles = open_redis("cluster", parse_redis_url(url))
    try:
        await handles.start()
        presence = RedisPresence(handles.commands, fast=handles.fast)
        sockets = _sockets("cluster")
        since = now_ms()
        await presence.refresh(sockets)
        await _check_refreshed(handles, sockets, since)

        # A stale slot map: every command reaches one node, which answers MOVED for the slots it
        # does not own; the heartbeat still refreshes every socket (the redirects are followed).
        one = handles.publisher.get_primaries()[0]
        real = handles.publisher.get_node_from_key
        handles.publisher.get_node_from_key = lambda k, replica=False: one  # type: ignore[method-assign]
        try:
            since = now_ms()
            await presence.refresh(sockets)
        finally:
            handles.publisher.get_node_from_key = real  # type: ignore[method-assign]
        await _check_refreshed(handles, sockets, since)
    finally:
        await handles.aclose()


async def test_a_failing_slice_does_not_stop_the_others(redis_url: str) -> None:
    handles = open_redis("standalone", parse_redis_url(redis_url))
    try:
        presence = RedisPresence(handles.commands, fast=handles.fast)
        sockets = _sockets("broken")
        # The first slice meets a key of the wrong type (ZADD answers WRONGTYPE).
        await handles.commands.set(sockets_key(sockets[0][0]), "not a sorted set")
        since = now_ms()
        with pytest.raises(Exception, match="WRONGTYPE"):
            await presence.refresh(sockets)
        await _check_refreshed(handles, sockets[1:], since)
    finally:
        await handles.aclose()
