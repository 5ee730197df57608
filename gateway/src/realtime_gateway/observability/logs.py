"""Structured JSON logs: one line per record, a correlation id per flow, PII redacted.

A *flow* is one socket event or one Kafka record. ``correlation(cid)`` binds an id in a
contextvar for the duration of the flow; every record logged meanwhile (in that task and the
tasks it spawns) carries it as ``correlationId``. Redaction runs on every record: values under
sensitive keys are masked, coordinates are coarsened, and tokens, e-mail addresses and phone
numbers are scrubbed out of free text.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import sys
import time
import traceback
from collections.abc import Mapping
from contextvars import ContextVar, Token
from typing import Any, Final, TextIO

import orjson
from opentelemetry import trace

REDACTED: Final = "[REDACTED]"

# A flow's id, or the sequence number it will be formatted from when first read (see new_flow).
_correlation_id: ContextVar[str | int | None] = ContextVar("realtime_correlation_id", default=None)

# Keys whose values are secrets or personal data, compared lower-case with '-'/'_' removed.
SENSITIVE_KEYS: Final = frozenset(
    {
        "token",
        "accesstoken",
        "refreshtoken",
        "reconnecttoken",
        "authorization",
        "auth",
        "password",
        "passwd",
        "secret",
        "apikey",
        "xapikey",
        "cookie",
        "setcookie",
        "text",
        "body",
        "title",
        "message_text",
        "email",
        "phone",
        "phonenumber",
        "address",
        "name",
        "firstname",
        "lastname",
        "fullname",
        "saslpassword",
    }
)
COORDINATE_KEYS: Final = frozenset({"lat", "lng", "lon", "latitude", "longitude"})
# Two decimals is about a kilometre: enough to debug a region, not enough to find a door.
COORDINATE_DECIMALS: Final = 2

_JWT_RE: Final = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_BEARER_RE: Final = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_EMAIL_RE: Final = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# International numbers (+…) or grouped local ones; bare digit runs are timestamps and ids.
_PHONE_RE: Final = re.compile(
    r"(?<![\w.])(?:\+\d[\d ()-]{7,}\d|\(?\d{2,5}\)?[ -]\d{2,5}[ -]\d{3,6})(?![\w.])"
)
_SECRET_PAIR_RE: Final = re.compile(
    r"(?i)\b(token|reconnectToken|password|secret|api[_-]?key|authorization)(\"?\s*[:=]\s*\"?)([^\s\",}&]+)"
)

# The same fields inside JSON that ended up in a message (a library dumping a record or payload).
_JSON_SECRET_RE: Final = re.compile(
    r'(?i)("(?:text|body|title|token|reconnectToken|accessToken|password|secret|apiKey|email|phone|address)"'
    r'\s*:\s*)"(?:[^"\\]|\\.)*"'
)
_JSON_COORD_RE: Final = re.compile(r'(?i)("(?:lat|lng|lon|latitude|longitude)"\s*:\s*)(-?\d+(?:\.\d+)?)')

# Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "taskName"}
)

LEVELS: Final[dict[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def parse_level(value: str) -> int:
    """``debug|info|warn|warning|error|critical`` (any case) to a logging level."""
    try:
        return LEVELS[value.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {value!r}; use one of {', '.join(LEVELS)}") from None


# --- correlation ids --------------------------------------------------------------------------
# Every socket event and Kafka record gets an id, so minting one must be cheap: a random
# per-process prefix and a counter (32 hex digits, the shape of a uuid4 hex) instead of a uuid4,
# which reads the OS's random source each time. A forked child draws its own prefix.
_cid_prefix = secrets.token_hex(8)
_cid_counter = itertools.count(1)


def _new_cid_prefix() -> None:
    global _cid_prefix, _cid_counter
    _cid_prefix = secrets.token_hex(8)
    _cid_counter = itertools.count(1)


os.register_at_fork(after_in_child=_new_cid_prefix)


def _format_cid(seq: int) -> str:
    return f"{_cid_prefix}{seq:016x}"


def new_correlation_id() -> str:
    return _format_cid(next(_cid_counter))


def current_correlation_id() -> str | None:
    value = _correlation_id.get()
    return _format_cid(value) if isinstance(value, int) else value


class correlation:  # lower case: used like the function it replaced, ``with correlation(cid) as c``
    """Bind a correlation id (a fresh one when ``cid`` is empty) for the enclosed flow.

    A class rather than a generator-based context manager: it is entered around every event.
    """

    __slots__ = ("_reset", "value")
    _reset: Token[str | int | None]
    value: str

    def __init__(self, cid: str | None = None) -> None:
        self.value = cid or new_correlation_id()

    def __enter__(self) -> str:
        self._reset = _correlation_id.set(self.value)
        return self.value

    def __exit__(self, *exc: object) -> None:
        _correlation_id.reset(self._reset)


class new_flow:  # lower case: a context manager used like ``correlation()``
    """A flow with a fresh correlation id that is only formatted if something reads it.

    Binds the id's sequence number; ``current_correlation_id()`` and the log formatter turn it
    into the same string each time. Most socket events log nothing, so most ids never need one.
    """

    __slots__ = ("_reset",)
    _reset: Token[str | int | None]

    def __enter__(self) -> None:
        self._reset = _correlation_id.set(next(_cid_counter))

    def __exit__(self, *exc: object) -> None:
        _correlation_id.reset(self._reset)


# --- redaction --------------------------------------------------------------------------------
def _norm_key(key: str) -> str:
    return key.lower().replace("-", "").replace("_", "")


def redact_text(text: str) -> str:
    """Scrub tokens, credentials, e-mail addresses and phone numbers out of free text."""
    text = _JWT_RE.sub(REDACTED, text)
    text = _BEARER_RE.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _SECRET_PAIR_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _JSON_SECRET_RE.sub(lambda m: f'{m.group(1)}"{REDACTED}"', text)
    text = _JSON_COORD_RE.sub(lambda m: f"{m.group(1)}{round(float(m.group(2)), COORDINATE_DECIMALS)}", text)
    text = _EMAIL_RE.sub(REDACTED, text)
    return _PHONE_RE.sub(REDACTED, text)


def _coarsen(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return round(float(value), COORDINATE_DECIMALS)
    return REDACTED


def redact(value: Any, key: str | None = None, _depth: int = 0) -> Any:
    """A copy of ``value`` that is safe to log (mappings and sequences are walked)."""
    if key is not None:
        norm = _norm_key(key)
        if norm in COORDINATE_KEYS:
            return _coarsen(value)
        if norm in SENSITIVE_KEYS or norm.endswith("token") or norm.endswith("password"):
            return REDACTED if value not in (None, "") else value
    if _depth > 8:
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k), _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v, None, _depth + 1) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(str(value))


# --- formatting -------------------------------------------------------------------------------
class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, correlationId, traceId, extras, exc."""

    def __init__(self, *, service: str = "realtime-gateway", instance: str | None = None) -> None:
        super().__init__()
        self._static: dict[str, str] = {"service": service}
        if instance:
            self._static["instance"] = instance

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact_text(record.getMessage()),
            **self._static,
        }
        cid = getattr(record, "correlationId", None) or current_correlation_id()
        if cid:
            entry["correlationId"] = cid
        span_ctx = trace.get_current_span().get_span_context()
        if span_ctx.is_valid:
            entry["traceId"] = format(span_ctx.trace_id, "032x")
            entry["spanId"] = format(span_ctx.span_id, "016x")
        for k, v in record.__dict__.items():
            if k not in _STANDARD_ATTRS and k != "correlationId" and not k.startswith("_"):
                entry[k] = redact(v, k)
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc"] = redact_text("".join(traceback.format_exception(*record.exc_info)))
        elif record.exc_text:
            entry["exc"] = redact_text(record.exc_text)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(
    level: str | int = "info",
    *,
    stream: TextIO | None = None,
    instance: str | None = None,
) -> logging.Handler:
    """Route every logger (ours and the libraries') through one JSON handler on stderr."""
    lvl = parse_level(level) if isinstance(level, str) else level
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(instance=instance))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(lvl)
    # Libraries never log below info, even at debug: their debug output dumps packets and
    # records verbatim (message text, tokens), which is exactly what must not reach the logs.
    for name in ("engineio", "socketio", "aiohttp", "aiokafka", "kafka", "redis"):
        logging.getLogger(name).setLevel(max(logging.INFO, lvl))
    return handler
