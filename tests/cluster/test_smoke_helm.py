"""Smoke tests for the project's Helm chart with a real helm and a real API server: lint, render,
then server-side apply of every rendered object with ``dryRun=All`` (full validation and
admission, nothing persisted)."""

from __future__ import annotations

import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kube_cluster import KubeCluster, KubeError
from tests.support.versions import REPO_ROOT

pytestmark = pytest.mark.cluster

CHART = REPO_ROOT / "charts" / "realtime-gateway-operator"
FIELD_MANAGER = "rtg-helm-smoke"


def helm(helm_bin: Path, *args: str, home: Path) -> str:
    # helm keeps caches and config under XDG dirs; a private home keeps the developer's out
    env = {
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.run(
        [str(helm_bin), *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def render(
    helm_bin: Path, kube: KubeCluster, namespace: str, home: Path, *extra: str
) -> list[dict[str, Any]]:
    out = helm(
        helm_bin,
        "template",
        "smoke",
        str(CHART),
        "--namespace",
        namespace,
        "--include-crds",
        # render for the real server's version, so the chart's kubeVersion constraint is checked
        "--kube-version",
        kube.version,
        *extra,
        home=home,
    )
    return [doc for doc in yaml.safe_load_all(out) if doc]


def resource_path(kube: KubeCluster, obj: dict[str, Any], namespace: str) -> str:
    """The REST path of ``obj``, from the server's discovery (so CRD-free kinds only)."""
    api_version: str = obj["apiVersion"]
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    resources = kube.request("GET", base)["resources"]
    matches = [r for r in resources if r["kind"] == obj["kind"] and "/" not in r["name"]]
    assert matches, f"the server does not serve {obj['kind']} in {api_version}"
    resource = matches[0]
    name = urllib.parse.quote(obj["metadata"]["name"])
    if resource["namespaced"]:
        ns = obj["metadata"].get("namespace") or namespace
        return f"{base}/namespaces/{ns}/{resource['name']}/{name}"
    return f"{base}/{resource['name']}/{name}"


def dry_run_apply(kube: KubeCluster, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    path = resource_path(kube, obj, namespace)
    query = urllib.parse.urlencode({"fieldManager": FIELD_MANAGER, "dryRun": "All", "force": "true"})
    return kube.request("PATCH", f"{path}?{query}", obj, content_type="application/apply-patch+yaml")


def test_helm_lint(helm_bin: Path, tmp_path: Path) -> None:
    out = helm(helm_bin, "lint", "--strict", str(CHART), home=tmp_path)
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("watch_own_namespace", [False, True], ids=["cluster-wide", "watch-namespaces"])
def test_rendered_chart_passes_server_side_dry_run(
    helm_bin: Path, kube: KubeCluster, kube_namespace: str, tmp_path: Path, watch_own_namespace: bool
) -> None:
    extra = ["--set", f"watchNamespaces={{{kube_namespace}}}"] if watch_own_namespace else []
    objects = render(helm_bin, kube, kube_namespace, tmp_path, *extra)
    kinds = {o["kind"] for o in objects}
    assert {"CustomResourceDefinition", "Deployment", "ServiceAccount"} <= kinds, kinds
    if watch_own_namespace:
        assert "RoleBinding" in kinds, kinds

    for obj in objects:
        try:
            applied = dry_run_apply(kube, obj, kube_namespace)
        except KubeError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} refused by the API server: {exc}")
        # the server filled in what only a real API server knows: defaults and a uid
        assert applied["metadata"]["uid"], applied
        assert applied["kind"] == obj["kind"]

    # dry run persisted nothing
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert kube.get_or_none(resource_path(kube, deployment, kube_namespace)) is None


def test_dry_run_rejects_an_invalid_rendered_object(
    helm_bin: Path, kube: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    # control for the test above: the same path does refuse a broken object
    objects = render(helm_bin, kube, kube_namespace, tmp_path)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    deployment["spec"]["replicas"] = -1
    with pytest.raises(KubeError) as refused:
        dry_run_apply(kube, deployment, kube_namespace)
    assert refused.value.status == 422
    assert "spec.replicas" in str(refused.value)
