"""The bus message a room emit publishes on the room's channel, and how a receiver reads it.

``<publisher>|<header JSON>\\n<body>``: the header names the room (``r``), the event (``e``), the
namespaces (``n``, null: all), the sid to skip (``s``), the emit's time (``t``), its trace context
(``tp``) and, for an event stamped with a position, that position (``p``: [epoch, offset]). The
body is the Socket.IO EVENT packet's JSON array (``[event, *args]``) as the publisher encoded it
for its own sockets, so a receiver writes it to its sockets without decoding the data and encoding
it again (decoding a location update's data cost five times the header). orjson never writes a
raw newline, so the first one ends the header.

The history script's messages (``recovery/history.py``) keep the whole-JSON form, the data inside
the header as ``d``: a receiver tells the two apart by the newline.
"""

from __future__ import annotations

from typing import Any, Final

import orjson


class _Undecoded:
    """The data of a bus message not decoded yet: its encoded body stands for it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNDECODED"


UNDECODED: Final = _Undecoded()


def encode(prefix: bytes, header: dict[str, Any], body: bytes) -> bytes:
    return prefix + orjson.dumps(header) + b"\n" + body


def read(payload: bytes) -> tuple[dict[str, Any], Any, bytes | None]:
    """(header, data, body) of a bus message; data is ``UNDECODED`` when the body carries it."""
    _, _, rest = payload.partition(b"|")
    head, newline, body = rest.partition(b"\n")
    header = orjson.loads(head)
    if not newline:
        return header, header.get("d"), None
    return header, UNDECODED, body


def decoded(data: Any, body: bytes | None) -> Any:
    """The emitted data, decoded from the body when it was not yet (the inverse of how
    python-socketio's emit makes ``[event, *args]``: one argument as itself, several as a tuple)."""
    if data is not UNDECODED or body is None:
        return data
    args = orjson.loads(body)[1:]
    if not args:
        return None
    return args[0] if len(args) == 1 else tuple(args)
