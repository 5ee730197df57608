"""Smoke tests proving the test control plane is a real Kubernetes: schema validation by the API
server, Deployments reconciled to Ready Pods by the controller-manager, scheduler and kwok, and
owner-reference garbage collection."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from tests.support.deploy import eventually as poll
from tests.support.kube_cluster import KubeCluster

pytestmark = pytest.mark.cluster

GROUP = "smoke.rtg.test"
PLURAL = "widgets"


async def eventually(probe: Callable[[], Awaitable[Any]], *, within: float, what: str) -> Any:
    """Await ``probe`` until it returns something truthy; an API error counts as "not yet"."""
    return await poll(probe, within=within, what=what, interval=0.25, retry_on=(ApiException,))


def as_body(obj: dict[str, Any]) -> Any:
    """kubernetes_asyncio sends plain dicts as they are; its stubs only name the model classes."""
    return obj


def error_message(exc: ApiException) -> str:
    return str(json.loads(exc.body or b"{}").get("message", ""))


def widget_crd() -> dict[str, Any]:
    spec_schema = {
        "type": "object",
        "required": ["color", "minReplicas", "maxReplicas"],
        "properties": {
            "color": {"type": "string", "enum": ["red", "blue"]},
            "minReplicas": {"type": "integer", "minimum": 1},
            "maxReplicas": {"type": "integer", "minimum": 1},
        },
        "x-kubernetes-validations": [
            {
                "rule": "self.minReplicas <= self.maxReplicas",
                "message": "minReplicas must not exceed maxReplicas",
            }
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": PLURAL, "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {"spec": spec_schema},
                        }
                    },
                }
            ],
        },
    }


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


async def test_crd_structural_schema_rejects_invalid_objects(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    ext = client.ApiextensionsV1Api(kube_api)
    custom = client.CustomObjectsApi(kube_api)
    crd_name = f"{PLURAL}.{GROUP}"
    await ext.create_custom_resource_definition(as_body(widget_crd()))
    try:

        async def established() -> bool:
            crd = await ext.read_custom_resource_definition(crd_name)
            return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

        await eventually(established, within=30, what="CRD Established")

        async def create(body: dict[str, Any]) -> Any:
            return await custom.create_namespaced_custom_object(GROUP, "v1", kube_namespace, PLURAL, body)

        # the new resource can take a moment to be served after Established
        valid = await eventually(
            lambda: create(widget("ok", color="red", minReplicas=1, maxReplicas=3)),
            within=30,
            what="a valid Widget to be created",
        )
        assert valid["metadata"]["uid"]

        with pytest.raises(ApiException) as schema_error:
            await create(widget("bad-schema", color="green", minReplicas=0, maxReplicas=3))
        assert schema_error.value.status == 422
        message = error_message(schema_error.value)
        assert "spec.color" in message and "Unsupported value" in message, message
        assert "spec.minReplicas" in message, message

        with pytest.raises(ApiException) as cel_error:
            await create(widget("bad-cel", color="blue", minReplicas=5, maxReplicas=2))
        assert cel_error.value.status == 422
        assert "minReplicas must not exceed maxReplicas" in error_message(cel_error.value)

        with pytest.raises(ApiException) as missing:
            await create(widget("bad-missing", color="blue"))
        assert missing.value.status == 422
        assert "spec.minReplicas: Required value" in error_message(missing.value)

        names = await custom.list_namespaced_custom_object(GROUP, "v1", kube_namespace, PLURAL)
        assert [i["metadata"]["name"] for i in names["items"]] == ["ok"]
    finally:
        await ext.delete_custom_resource_definition(crd_name)


async def test_deployment_becomes_available_with_ready_pods_on_kwok_node(
    kube: KubeCluster, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    labels = {"app": "smoke"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "smoke"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                # kwok never pulls or runs the image: the name only has to be valid
                "spec": {"containers": [{"name": "app", "image": "example.invalid/smoke:1"}]},
            },
        },
    }
    await apps.create_namespaced_deployment(kube_namespace, as_body(deployment))

    async def available() -> bool:
        d = await apps.read_namespaced_deployment_status("smoke", kube_namespace)
        conditions = {c.type: c.status for c in d.status.conditions or []}
        return d.status.available_replicas == 2 and conditions.get("Available") == "True"

    await eventually(available, within=90, what="Deployment smoke Available with 2 replicas")

    pods = (await core.list_namespaced_pod(kube_namespace, label_selector="app=smoke")).items
    assert len(pods) == 2
    for pod in pods:
        assert pod.spec.node_name in kube.node_names
        assert pod.status.phase == "Running"
        ready = {c.type: c.status for c in pod.status.conditions}
        assert ready.get("Ready") == "True", pod.status.conditions
        assert pod.status.pod_ip
        # the Pod belongs to a ReplicaSet that the Deployment owns: the controllers really ran
        (owner,) = pod.metadata.owner_references
        assert owner.kind == "ReplicaSet"
        rs = await apps.read_namespaced_replica_set(owner.name, kube_namespace)
        assert rs.metadata.owner_references[0].kind == "Deployment"


async def test_owned_configmap_is_garbage_collected_with_its_owner(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)

    def cm(name: str, owner: Any = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name}
        if owner is not None:
            meta["ownerReferences"] = [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": owner.metadata.name,
                    "uid": owner.metadata.uid,
                }
            ]
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}

    owner = await core.create_namespaced_config_map(kube_namespace, as_body(cm("owner")))
    await core.create_namespaced_config_map(kube_namespace, as_body(cm("owned", owner)))
    await core.create_namespaced_config_map(kube_namespace, as_body(cm("bystander")))

    await core.delete_namespaced_config_map(
        "owner", kube_namespace, body=client.V1DeleteOptions(propagation_policy="Background")
    )

    async def owned_gone() -> bool:
        try:
            await core.read_namespaced_config_map("owned", kube_namespace)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    await eventually(owned_gone, within=60, what="the owned ConfigMap to be garbage-collected")
    # only the dependent went: the unrelated ConfigMap is untouched
    still = await core.read_namespaced_config_map("bystander", kube_namespace)
    assert still.data == {"k": "v"}
