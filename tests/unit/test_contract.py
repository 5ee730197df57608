from __future__ import annotations

import pytest

import realtime_contract as c

pytestmark = pytest.mark.unit


def test_every_env_name_has_the_prefix() -> None:
    names = [v for k, v in vars(c.Env).items() if k.isupper()]
    assert names, "Env lists no settings"
    assert all(n.startswith(c.ENV_PREFIX) for n in names)
    assert len(set(names)) == len(names)


def test_namespaces_map_to_distinct_roles() -> None:
    assert set(c.NAMESPACE_ROLES) == {"/client", "/porter", "/admin"}
    assert len(set(c.NAMESPACE_ROLES.values())) == 3
