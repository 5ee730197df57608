"""A small RESP2/RESP3 codec for the hot-path Redis connections (``state/multiplex.py``).

redis-py spends most of a command's cost outside Redis: pool checkout, retry wrappers, argument
inspection and a parser that awaits per reply. The location path needs only a handful of
commands, so it packs them itself and parses whole socket reads at once.
"""

from __future__ import annotations

from typing import Any, Final

from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError

_CRLF: Final = b"\r\n"


class Push(list[Any]):
    """A RESP3 out-of-band push (``>``): pub/sub messages, never the reply to a command."""


def encode_arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        raise TypeError("booleans are not Redis arguments")
    if isinstance(value, int | float):
        return repr(value).encode()  # the form redis-py sends
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"cannot send {type(value).__name__} to Redis")


def pack_command(*args: Any) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = encode_arg(arg)
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(_CRLF)
    return b"".join(parts)


def error_from_reply(message: str) -> ResponseError:
    """The redis-py exception class for an error reply (the subset the hot path can meet)."""
    code, _, rest = message.partition(" ")
    if code == "NOSCRIPT":
        return NoScriptError(rest)
    if code == "READONLY":
        return ReadOnlyError(rest)
    return ResponseError(message)


class _Incomplete(Exception):
    pass


_INCOMPLETE: Final = _Incomplete()


class RespParser:
    """Feed socket reads, take complete replies. Error replies come back as exception instances
    (not raised), so one failed command cannot desynchronise the replies that follow it."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def replies(self) -> list[Any]:
        """Every complete reply buffered so far, in order."""
        out: list[Any] = []
        buf = self._buf
        while self._pos < len(buf):
            try:
                value, pos = self._parse(buf, self._pos)
            except _Incomplete:
                break
            self._pos = pos
            out.append(value)
        return out

    def _parse(self, buf: bytearray, pos: int) -> tuple[Any, int]:
        end = buf.find(_CRLF, pos)
        if end < 0:
            raise _INCOMPLETE
        kind = buf[pos]
        line = bytes(buf[pos + 1 : end])
        pos = end + 2
        if kind == 36:  # $ bulk string
            n = int(line)
            if n < 0:
                return None, pos
            stop = pos + n
            if len(buf) < stop + 2:
                raise _INCOMPLETE
            return bytes(buf[pos:stop]), stop + 2
        if kind == 42 or kind == 126 or kind == 62:  # * array, ~ set, > push
            n = int(line)
            if n < 0:
                return None, pos
            items: list[Any] = Push() if kind == 62 else []
            for _ in range(n):
                value, pos = self._parse(buf, pos)
                items.append(value)
            return items, pos
        if kind == 43:  # + simple string
            return line, pos
        if kind == 58 or kind == 40:  # : integer, ( big number
            return int(line), pos
        if kind == 45:  # - error
            return error_from_reply(line.decode(errors="replace")), pos
        if kind == 95:  # _ null
            return None, pos
        if kind == 37:  # % map
            mapping: dict[Any, Any] = {}
            for _ in range(int(line)):
                key, pos = self._parse(buf, pos)
                value, pos = self._parse(buf, pos)
                mapping[key if not isinstance(key, list) else tuple(key)] = value
            return mapping, pos
        if kind == 44:  # , double
            return float(line), pos
        if kind == 35:  # # boolean
            return line == b"t", pos
        if kind == 61 or kind == 33:  # = verbatim string, ! blob error
            n = int(line)
            stop = pos + n
            if len(buf) < stop + 2:
                raise _INCOMPLETE
            blob = bytes(buf[pos:stop])
            if kind == 33:
                return error_from_reply(blob.decode(errors="replace")), stop + 2
            return blob[4:], stop + 2  # drop the "txt:" format prefix
        if kind == 124:  # | attributes precede the value they describe: skip them
            for _ in range(2 * int(line)):
                _, pos = self._parse(buf, pos)
            return self._parse(buf, pos)
        raise ResponseError(f"unexpected RESP type byte {kind!r}")
