"""The Helm chart: lint, schema errors, and its rendered output installed on the real API server.

The installed operator then runs with the chart's own ServiceAccount token (least-privilege RBAC
is enough to bring a RealtimeGateway to Ready).
"""

from __future__ import annotations

import base64
import secrets
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kube_cluster import KubeCluster, KubeError

from .conftest import start_operator
from .helpers import REPO, apply, condition, path_of, rtg_path, wait_for

pytestmark = pytest.mark.cluster

CHART = REPO / "charts" / "realtime-gateway-operator"


def helm(helm_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_bin), *args], capture_output=True, text=True, timeout=120, check=False)


def render(helm_bin: Path, release: str, namespace: str, *sets: str) -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "--namespace", namespace, "--include-crds"]
    for s in sets:
        args += ["--set", s]
    out = helm(helm_bin, *args)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_chart_lints_clean(helm_bin: Path) -> None:
    out = helm(helm_bin, "lint", "--strict", str(CHART))
    assert out.returncode == 0, out.stdout + out.stderr
    out = helm(
        helm_bin,
        "lint",
        "--strict",
        str(CHART),
        "--set",
        "watchNamespaces={a,b}",
        "--set",
        "example.enabled=true",
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_chart_packages_with_its_crd(helm_bin: Path, tmp_path: Path) -> None:
    out = helm(helm_bin, "package", str(CHART), "-d", str(tmp_path))
    assert out.returncode == 0, out.stderr
    (tgz,) = tmp_path.glob("realtime-gateway-operator-*.tgz")
    with tarfile.open(tgz) as tar:
        crd = tar.extractfile("realtime-gateway-operator/crds/realtimegateways.yaml")
        assert crd is not None
        assert crd.read() == (REPO / "crds" / "realtimegateways.yaml").read_bytes()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": "two"}, "at '/replicaCount': got string, want integer"),
        ({"logLevel": "LOUD"}, "at '/logLevel': value must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR'"),
        ({"watchNamespaces": ["Bad_NS"]}, "at '/watchNamespaces/0': 'Bad_NS' does not match pattern"),
        ({"imge": {"repository": "x"}}, "additional properties 'imge' not allowed"),
    ],
)
def test_values_violating_the_schema_fail_lint_readably(
    helm_bin: Path, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    bad = tmp_path / "bad-values.yaml"
    bad.write_text(yaml.safe_dump(values))
    out = helm(helm_bin, "lint", str(CHART), "-f", str(bad))
    assert out.returncode != 0
    assert message in out.stdout + out.stderr, out.stdout + out.stderr


@pytest.fixture
def release(kube: KubeCluster) -> Iterator[str]:
    name = f"r{secrets.token_hex(3)}"
    yield name
    # cluster-scoped objects of the release (namespaced ones go with the test namespace)
    for plural in ("clusterrolebindings", "clusterroles"):
        for suffix in ("", "-cluster"):
            try:
                kube.request(
                    "DELETE",
                    f"/apis/rbac.authorization.k8s.io/v1/{plural}/{name}-realtime-gateway-operator{suffix}",
                )
            except KubeError as exc:
                if exc.status != 404:
                    raise


def token_kubeconfig(kube: KubeCluster, namespace: str, sa: str, path: Path) -> Path:
    token = kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )["status"]["token"]
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "t", "cluster": {"server": kube.server, "certificate-authority": str(kube.ca_file)}}
        ],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": sa, "namespace": namespace}}],
        "current-context": "t",
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_rendered_chart_installs_and_its_rbac_runs_the_operator(
    kube: KubeCluster, rtg_crd: str, helm_bin: Path, kube_namespace: str, release: str, tmp_path: Path
) -> None:
    ns = kube_namespace
    docs = render(
        helm_bin, release, ns, f"watchNamespaces={{{ns}}}", "example.enabled=true", "example.name=example"
    )
    kinds = [d["kind"] for d in docs]
    assert {"CustomResourceDefinition", "ServiceAccount", "ClusterRole", "RoleBinding", "Deployment"} <= set(
        kinds
    )
    assert "ClusterRoleBinding" in kinds  # only the cluster-scoped reads

    # Everything but the example CR first (it needs its Secret), each applied for real.
    example = next(d for d in docs if d["kind"] == "RealtimeGateway")
    for doc in docs:
        if doc is not example:
            apply(kube, doc, ns)
    dep_path = path_of("apps/v1", "deployments", ns, f"{release}-realtime-gateway-operator")

    def available() -> bool:
        dep = kube.get_or_none(dep_path) or {}
        return any(
            c["type"] == "Available" and c["status"] == "True"
            for c in dep.get("status", {}).get("conditions", [])
        )

    wait_for(available, "the chart's operator Deployment Available (kwok)")
    dep = kube.request("GET", dep_path)
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--namespace={ns}" in args and "--all-namespaces" not in args

    # The chart's ServiceAccount is all the operator needs: run it with that token.
    sa = f"{release}-realtime-gateway-operator"
    kubeconfig = token_kubeconfig(kube, ns, sa, tmp_path / "sa.kubeconfig")
    apply(
        kube,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "realtime-gateway-jwt", "namespace": ns},
            "data": {"secret": base64.b64encode(b"dev-secret").decode()},
        },
    )
    apply(kube, example, ns)
    proc = start_operator(kubeconfig, tmp_path / "logs", f"--namespace={ns}")
    try:

        def ready() -> dict[str, Any] | None:
            obj = kube.request("GET", rtg_path(ns, "example"))
            return obj if condition(obj, "Ready").get("status") == "True" else None

        obj = wait_for(ready, "the example RealtimeGateway Ready under the chart's RBAC", timeout=90)
        assert condition(obj, "Degraded").get("status") == "True"  # example Kafka host does not resolve here
        assert "Kafka" in condition(obj, "Degraded")["message"]
        forbidden = [line for line in proc.log_path.read_text().splitlines() if "forbidden" in line.lower()]
        assert not forbidden, "\n".join(forbidden[:10])
    finally:
        code = proc.stop()
        print(f"\n[operator as {sa}] exited {code}; log: {proc.log_path}", file=sys.stderr)
