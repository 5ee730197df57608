"""The bus message's form (``fanout/message.py``): header, newline, the packet's JSON array."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from realtime_gateway.fanout.message import UNDECODED, decoded, encode, read

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("args", "data"),
    [
        (["location:update", {"lat": 1.5, "text": "two\nlines"}], {"lat": 1.5, "text": "two\nlines"}),
        (["ping"], None),
        (["pair", 1, "b"], (1, "b")),
    ],
)
def test_the_body_is_written_as_is_and_decodes_to_the_emitted_data(args: list[Any], data: Any) -> None:
    body = orjson.dumps(args)
    payload = encode(b"host|", {"r": "order:o1", "e": args[0], "tp": None}, body)
    header, undecoded, carried = read(payload)
    assert header == {"r": "order:o1", "e": args[0], "tp": None}
    assert undecoded is UNDECODED and carried == body
    assert decoded(undecoded, carried) == data


def test_the_history_scripts_form_carries_the_data_in_the_header() -> None:
    header, data, body = read(b'hist|{"r":"order:o1","e":"order:status","d":{"offset":3}}')
    assert (header["e"], data, body) == ("order:status", {"offset": 3}, None)
    assert decoded(data, body) == {"offset": 3}  # already decoded: passed through


def test_decoded_data_is_left_alone() -> None:
    assert decoded({"a": 1}, b'["x",{"a":2}]') == {"a": 1}
