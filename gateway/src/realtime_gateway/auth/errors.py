"""Connection refusal codes (contract §3 "Refusal")."""

from __future__ import annotations

from enum import StrEnum


class ConnectCode(StrEnum):
    AUTH_REQUIRED = "AUTH_REQUIRED"
    AUTH_INVALID = "AUTH_INVALID"
    AUTH_EXPIRED = "AUTH_EXPIRED"
    FORBIDDEN_NAMESPACE = "FORBIDDEN_NAMESPACE"
    CAPACITY = "CAPACITY"
    RATE_LIMITED = "RATE_LIMITED"
    # Not in the v1 list: the gateway cannot reach its state store right now; retry later.
    UNAVAILABLE = "UNAVAILABLE"


class AuthError(Exception):
    """A credential was refused; ``code`` goes to the client as the connect_error code."""

    def __init__(self, code: ConnectCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
