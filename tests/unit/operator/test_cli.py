"""The `realtime-operator` command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from realtime_operator.cli import parse_args

pytestmark = pytest.mark.unit


def test_defaults_watch_every_namespace() -> None:
    s = parse_args([])
    assert s.clusterwide and s.namespaces == ()
    assert s.kubeconfig is None and s.liveness == "http://0.0.0.0:8080/healthz"


def test_namespaces_kubeconfig_and_periods() -> None:
    s = parse_args(
        ["-n", "a", "--namespace=b", "--kubeconfig", "/tmp/kc", "--resync-seconds", "5", "--liveness", ""]
    )
    assert not s.clusterwide and s.namespaces == ("a", "b")
    assert s.kubeconfig == Path("/tmp/kc") and s.resync_seconds == 5.0 and s.liveness is None


def test_namespace_and_all_namespaces_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        parse_args(["-A", "-n", "a"])
