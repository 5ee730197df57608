"""The hot-path RESP codec (state/resp.py, on hiredis) against hand-written wire and redis-py's packer."""

from __future__ import annotations

from typing import Any

import hiredis
import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError

from realtime_gateway.state.resp import Push, RespParser, pack_command

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "args",
    [
        ("SET", "porter:location:{p1}", b'{"lat":1.5}', "EX", 3600),
        ("EVALSHA", "abc", 1, "ratelimit:location:u", 1000, 60000.0, 1),
        ("SPUBLISH", "rtg:room:order:ü", b"\x00\xff|payload"),
        ("PING",),
    ],
)
def test_pack_matches_redis_py(args: tuple[Any, ...]) -> None:
    ours = pack_command(*args)
    theirs = b"".join(Connection().pack_command(*args))
    assert ours == theirs


def test_pack_refuses_what_redis_py_would_mangle() -> None:
    with pytest.raises(TypeError):
        pack_command("SET", "k", True)
    with pytest.raises(TypeError):
        pack_command("SET", "k", None)
    with pytest.raises(TypeError):
        pack_command("SET", "k", bytearray(b"v"))


def parse_all(wire: bytes) -> list[Any]:
    parser = RespParser()
    parser.feed(wire)
    return parser.replies()


def test_resp2_types() -> None:
    wire = b"+OK\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*2\r\n$1\r\na\r\n:1\r\n*-1\r\n*0\r\n"
    assert parse_all(wire) == [b"OK", 42, b"hello", None, [b"a", 1], None, []]


def test_resp3_types() -> None:
    wire = b"_\r\n,1.5\r\n#t\r\n#f\r\n~2\r\n$1\r\nx\r\n$1\r\ny\r\n%1\r\n+proto\r\n:3\r\n=8\r\ntxt:abcd\r\n"
    assert parse_all(wire) == [
        None,
        1.5,
        True,
        False,
        [b"x", b"y"],
        {b"proto": 3},
        b"abcd",
    ]


def test_a_reply_no_redis_sends_fails_the_read_rather_than_shifting_replies() -> None:
    # A blob error (``!``) is in the RESP3 spec but sent by no Redis release: the connection's
    # reader fails (and reconnects) instead of handing a later reply to the wrong caller.
    with pytest.raises(hiredis.ProtocolError):
        parse_all(b":1\r\n!5\r\nERR x\r\n")


def test_push_is_marked() -> None:
    [push, reply] = parse_all(b">3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$3\r\nabc\r\n+OK\r\n")
    assert isinstance(push, Push) and push == [b"smessage", b"ch", b"abc"]
    assert not isinstance(reply, Push)


def test_error_replies_are_values_of_redis_py_classes() -> None:
    wire = b"-NOSCRIPT No matching script\r\n-READONLY You can't write\r\n-ERR wrong\r\n:1\r\n"
    nos, ro, generic, after = parse_all(wire)
    assert isinstance(nos, NoScriptError)
    assert isinstance(ro, ReadOnlyError)
    assert isinstance(generic, ResponseError) and "wrong" in str(generic)
    assert after == 1  # an error does not desynchronise the next reply


def test_replies_split_at_every_byte() -> None:
    wire = b"*3\r\n$8\r\nsmessage\r\n$7\r\nchannel\r\n$10\r\n0123456789\r\n:7\r\n+OK\r\n"
    expected = [[b"smessage", b"channel", b"0123456789"], 7, b"OK"]
    for cut in range(len(wire) + 1):
        parser = RespParser()
        got: list[Any] = []
        parser.feed(wire[:cut])
        got += parser.replies()
        parser.feed(wire[cut:])
        got += parser.replies()
        assert got == expected, cut


def test_binary_payload_with_crlf_inside() -> None:
    payload = b"a\r\nb\r\n\x00"
    assert parse_all(b"$%d\r\n%s\r\n" % (len(payload), payload)) == [payload]
