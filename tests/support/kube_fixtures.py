"""pytest fixtures for the real Kubernetes control plane and helm (see tests/conftest.py).

- ``kube`` (session): a started :class:`KubeCluster` (``.kubeconfig``, ``.server``, ``.ca_file``,
  ``.node_names``, ``.request(...)`` for quick sync REST calls as the admin user).
- ``kube_namespace`` (function): a fresh namespace (its default ServiceAccount already exists),
  deleted afterwards.
- ``kube_api`` (function, async): a ``kubernetes_asyncio`` ApiClient on the admin kubeconfig.
- ``helm_bin`` (session): Path of the helm binary built by ``tools/helm.sh``.
"""

from __future__ import annotations

import re
import secrets
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.kube_cluster import KubeCluster, helm_binary, kube_binary

T = TypeVar("T")


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    names = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
    _require(lambda: [kube_binary(n) for n in names])
    cluster = KubeCluster(tmp_path_factory.mktemp("kube"))
    cluster.start()
    print(
        f"\n[kube] {cluster.version} ready at {cluster.server} in {cluster.started_in:.1f}s "
        f"(logs: {cluster.log_dir})",
        file=sys.stderr,
    )
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    return _require(helm_binary)


def _require(find: Callable[[], T]) -> T:
    """``find()``, or a plain test failure naming the build command (no traceback, no chaining)."""
    try:
        return find()
    except FileNotFoundError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


def _namespace_name(test_name: str) -> str:
    # DNS-1123 label: lowercase alphanumerics and '-', at most 63 characters
    slug = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"t-{slug}-{secrets.token_hex(3)}"


@pytest.fixture
def kube_namespace(kube: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    if not kube.healthy():
        pytest.fail(f"the test control plane is down:\n{kube.logs()}", pytrace=False)
    name = _namespace_name(request.node.name)
    kube.create_namespace(name)
    try:
        yield name
    finally:
        # not waited for: finalization runs in the background while later tests go on
        kube.delete_namespace(name)


@pytest.fixture
async def kube_api(kube: KubeCluster) -> AsyncIterator[Any]:
    from kubernetes_asyncio import client, config

    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kube.kubeconfig), client_configuration=configuration)
    api = client.ApiClient(configuration=configuration)
    try:
        yield api
    finally:
        await api.close()
