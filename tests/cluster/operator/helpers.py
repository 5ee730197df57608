"""REST helpers for the operator's cluster tests (sync, as the admin user of the test cluster)."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from realtime_contract import CRD_GROUP, CRD_PLURAL, CRD_VERSION
from tests.support.kube_cluster import KubeCluster, KubeError
from tests.support.procs import wait_until

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[3]
CRD_FILE = REPO / "crds" / "realtimegateways.yaml"
TESTDATA = Path(__file__).parent / "testdata"
MANAGER = "rtg-cluster-tests"
RTG = f"/apis/{CRD_GROUP}/{CRD_VERSION}"

# plural and whether namespaced, by (apiVersion, kind), for the kinds the tests apply
_KINDS: dict[tuple[str, str], tuple[str, bool]] = {
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): ("customresourcedefinitions", False),
    (f"{CRD_GROUP}/{CRD_VERSION}", "RealtimeGateway"): (CRD_PLURAL, True),
    ("v1", "Secret"): ("secrets", True),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("v1", "Namespace"): ("namespaces", False),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): ("clusterroles", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): ("clusterrolebindings", False),
    ("rbac.authorization.k8s.io/v1", "Role"): ("roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("rolebindings", True),
}


def path_of(api_version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    p = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
    return f"{p}/{name}" if name else p


def obj_path(obj: dict[str, Any], namespace: str | None = None) -> str:
    plural, namespaced = _KINDS[(obj["apiVersion"], obj["kind"])]
    ns = (obj["metadata"].get("namespace") or namespace) if namespaced else None
    return path_of(obj["apiVersion"], plural, ns, obj["metadata"]["name"])


def apply(
    kube: KubeCluster, obj: dict[str, Any], namespace: str | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Server-side apply as the tests' field manager."""
    query = {"fieldManager": MANAGER, "force": "true"}
    if dry_run:
        query["dryRun"] = "All"
    return kube.request(
        "PATCH",
        obj_path(obj, namespace) + "?" + urllib.parse.urlencode(query),
        obj,
        content_type="application/apply-patch+yaml",
    )


def merge_patch(kube: KubeCluster, path: str, patch: dict[str, Any]) -> dict[str, Any]:
    return kube.request("PATCH", path, patch, content_type="application/merge-patch+json")


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    return wait_until(probe, timeout=timeout, what=what, interval=0.25)


def hold(probe: Callable[[], bool], what: str, seconds: float) -> None:
    """Assert that ``probe`` stays true for ``seconds`` (for 'nothing happens' checks)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert probe(), f"expected to hold for {seconds}s: {what}"
        time.sleep(0.25)


def install_crds(kube: KubeCluster, path: Path) -> list[str]:
    names = []
    for doc in load_yaml_docs(path):
        apply(kube, doc)
        names.append(doc["metadata"]["name"])
    for name in names:

        def established(name: str = name) -> bool:
            crd = kube.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            conds = {c["type"]: c["status"] for c in crd.get("status", {}).get("conditions", [])}
            return conds.get("Established") == "True"

        wait_for(established, f"CRD {name} Established")
    return names


def delete_crds(kube: KubeCluster, names: list[str]) -> None:
    for name in names:
        try:
            kube.request("DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        except KubeError as exc:
            if exc.status != 404:
                raise
    for name in names:

        def gone(name: str = name) -> bool:
            return kube.get_or_none(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}") is None

        wait_for(gone, f"CRD {name} deleted", timeout=120)


def condition(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any]:
    for c in (obj or {}).get("status", {}).get("conditions", []) or []:
        if c.get("type") == ctype:
            return dict(c)
    return {}


def rtg_path(namespace: str, name: str) -> str:
    return f"{RTG}/namespaces/{namespace}/{CRD_PLURAL}/{name}"
