"""Authorization rules are pure functions: the whole matrix without a server."""

from __future__ import annotations

import pytest

from realtime_gateway.auth import authz
from realtime_gateway.auth.claims import Claims
from realtime_gateway.state.base import OrderAccess

pytestmark = pytest.mark.unit

CUSTOMER = Claims("c1", "customer", 0)
PORTER = Claims("p1", "porter", 0)
ADMIN = Claims("a1", "admin", 0)
SERVICE = Claims("svc", "service", 0)
MINE = OrderAccess("o1", "c1", "p1")
OTHERS = OrderAccess("o2", "c2", "p2")
UNASSIGNED = OrderAccess("o3", "c1", None)


def verdict(decision: authz.Decision) -> str:
    return "ok" if decision.allowed else decision.code


@pytest.mark.parametrize(
    ("claims", "access", "expected"),
    [
        (CUSTOMER, MINE, "ok"),
        (CUSTOMER, OTHERS, "FORBIDDEN"),
        (CUSTOMER, None, "NOT_FOUND"),
        (CUSTOMER, UNASSIGNED, "ok"),
        (PORTER, MINE, "ok"),
        (PORTER, OTHERS, "FORBIDDEN"),
        (PORTER, UNASSIGNED, "FORBIDDEN"),
        (PORTER, None, "NOT_FOUND"),
        (ADMIN, MINE, "ok"),
        (ADMIN, OTHERS, "ok"),
        (ADMIN, None, "NOT_FOUND"),
        (SERVICE, MINE, "FORBIDDEN"),
    ],
)
def test_can_subscribe(claims: Claims, access: OrderAccess | None, expected: str) -> None:
    assert verdict(authz.can_subscribe(claims, access)) == expected


def test_customer_id_equal_to_porter_id_of_another_role_is_not_confused() -> None:
    # A porter whose id happens to equal the order's customer id is still not the customer.
    assert verdict(authz.can_subscribe(Claims("c1", "porter", 0), MINE)) == "FORBIDDEN"
    assert verdict(authz.can_subscribe(Claims("p1", "customer", 0), MINE)) == "FORBIDDEN"


@pytest.mark.parametrize(
    ("claims", "expected"), [(CUSTOMER, "FORBIDDEN"), (PORTER, "ok"), (ADMIN, "FORBIDDEN")]
)
def test_can_send_location(claims: Claims, expected: str) -> None:
    assert verdict(authz.can_send_location(claims)) == expected


@pytest.mark.parametrize(
    ("claims", "access", "expected"),
    [
        (CUSTOMER, MINE, "ok"),
        (PORTER, MINE, "ok"),
        (ADMIN, MINE, "FORBIDDEN"),
        (CUSTOMER, OTHERS, "FORBIDDEN"),
        (PORTER, None, "NOT_FOUND"),
    ],
)
def test_can_chat(claims: Claims, access: OrderAccess | None, expected: str) -> None:
    assert verdict(authz.can_chat(claims, access)) == expected


@pytest.mark.parametrize(
    ("claims", "offered_to", "expected"),
    [
        (PORTER, "p1", "ok"),
        (PORTER, "p2", "FORBIDDEN"),
        (PORTER, None, "NOT_FOUND"),
        (CUSTOMER, "c1", "FORBIDDEN"),
    ],
)
def test_can_answer_offer(claims: Claims, offered_to: str | None, expected: str) -> None:
    assert verdict(authz.can_answer_offer(claims, offered_to)) == expected


def test_namespace_admits() -> None:
    roles = {"/client": "customer", "/porter": "porter", "/admin": "admin"}
    assert authz.namespace_admits("/client", CUSTOMER, roles)
    assert not authz.namespace_admits("/porter", CUSTOMER, roles)
    assert not authz.namespace_admits("/client", SERVICE, roles)
