"""Authorization rules: pure functions of the caller's claims and what is known about an order."""

from __future__ import annotations

from dataclasses import dataclass

from realtime_gateway.auth.claims import Claims
from realtime_gateway.state.base import OrderAccess


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    code: str = ""
    message: str = ""


ALLOW = Decision(True)


def _deny(code: str, message: str) -> Decision:
    return Decision(False, code, message)


def is_member(claims: Claims, access: OrderAccess) -> bool:
    """The order's customer or its assigned porter."""
    if claims.role == "customer":
        return access.customer_id == claims.user_id
    if claims.role == "porter":
        return access.porter_id == claims.user_id
    return False


def can_subscribe(claims: Claims, access: OrderAccess | None) -> Decision:
    """Customers: own orders; porters: orders assigned to them; admins: any known order.

    An order the gateway has not heard of is NOT_FOUND for everyone, so a client that connects
    before ``order.created`` arrived can tell "retry later" from "not yours".
    """
    if access is None:
        return _deny("NOT_FOUND", "unknown order")
    if claims.is_admin or is_member(claims, access):
        return ALLOW
    return _deny("FORBIDDEN", "not your order")


def can_send_location(claims: Claims) -> Decision:
    if claims.role == "porter":
        return ALLOW
    return _deny("FORBIDDEN", "only porters send locations")


def can_chat(claims: Claims, access: OrderAccess | None) -> Decision:
    """The order's customer and its assigned porter may chat; admins observe."""
    if access is None:
        return _deny("NOT_FOUND", "unknown order")
    if is_member(claims, access):
        return ALLOW
    return _deny("FORBIDDEN", "not a member of this order")


def can_answer_offer(claims: Claims, offered_porter_id: str | None) -> Decision:
    """Only the porter an offer was made to may accept or reject it."""
    if claims.role != "porter":
        return _deny("FORBIDDEN", "only porters answer offers")
    if offered_porter_id is None:
        return _deny("NOT_FOUND", "unknown offer")
    if offered_porter_id != claims.user_id:
        return _deny("FORBIDDEN", "offer made to another porter")
    return ALLOW


def namespace_admits(namespace: str, claims: Claims, namespace_roles: dict[str, str]) -> bool:
    return namespace_roles.get(namespace) == claims.role
