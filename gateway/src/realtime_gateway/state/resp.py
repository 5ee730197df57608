"""The RESP codec for the hot-path Redis connections (``state/multiplex.py``), on hiredis.

redis-py spends most of a command's cost outside Redis: pool checkout, retry wrappers, argument
inspection and a parser that awaits per reply. The location path and the fan-out bus need only a
handful of commands, so they pack them with hiredis and parse whole socket reads at once with its
``Reader`` (C; about a tenth of the pure-Python parser's cost per pub/sub message).

Not covered, as no Redis release sends them: RESP3 attributes (``|``, hiredis returns them as a
reply of their own) and blob errors (``!``, a protocol error that drops the connection).
"""

from __future__ import annotations

from typing import Any, Final

import hiredis
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError

# What ``Reader.gets`` returns while a reply is incomplete (its default, False, is also a RESP3 reply).
_NOT_ENOUGH_DATA: Final = object()

# A RESP3 out-of-band push (``>``): pub/sub messages, never the reply to a command.
Push: Final = hiredis.PushNotification


def pack_command(*args: Any) -> bytes:
    """The command as redis-py packs it; anything but str, bytes, int or float (``None``, bools,
    bytearrays) is a ``TypeError`` rather than a silently converted argument."""
    packed: bytes = hiredis.pack_command(args)
    return packed


def error_from_reply(message: str) -> ResponseError:
    """The redis-py exception class for an error reply (the subset the hot path can meet)."""
    code, _, rest = message.partition(" ")
    if code == "NOSCRIPT":
        return NoScriptError(rest)
    if code == "READONLY":
        return ReadOnlyError(rest)
    return ResponseError(message)


class RespParser:
    """Feed socket reads, take complete replies. Error replies come back as exception instances
    (not raised), so one failed command cannot desynchronise the replies that follow it."""

    __slots__ = ("_reader",)

    def __init__(self) -> None:
        self._reader = hiredis.Reader(replyError=ResponseError, notEnoughData=_NOT_ENOUGH_DATA)

    def feed(self, data: bytes) -> None:
        self._reader.feed(data)

    def replies(self) -> list[Any]:
        """Every complete reply buffered so far, in order."""
        out: list[Any] = []
        gets = self._reader.gets
        while (reply := gets()) is not _NOT_ENOUGH_DATA:
            if type(reply) is ResponseError:
                reply = error_from_reply(str(reply))
            out.append(reply)
        return out
