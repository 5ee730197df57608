"""The identity a verified token (or a reconnect token) carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Role = Literal["customer", "porter", "admin", "service"]
ROLES: Final[frozenset[str]] = frozenset({"customer", "porter", "admin", "service"})
# Roles that may hold a socket; `service` is for the server API only.
SOCKET_ROLES: Final[frozenset[str]] = frozenset({"customer", "porter", "admin"})


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: str
    role: Role
    # Unix seconds; a reconnect token never outlives the credential it came from.
    expires_at: float

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"
