"""The operator (a real subprocess) against the real control plane: every "Done when" bullet."""

from __future__ import annotations

import asyncio
import base64
import copy
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from realtime_contract import HEALTHZ_PATH, READYZ_PATH, Env, Metric
from tests.support.kafka_fixtures import unique_name
from tests.support.kafka_server import KafkaBroker
from tests.support.kube_cluster import KubeCluster
from tests.support.pod_env import resolve_env_entries
from tests.support.procs import ManagedProcess

from .conftest import RESYNC_SECONDS
from .helpers import (
    TESTDATA,
    apply,
    condition,
    delete_crds,
    hold,
    install_crds,
    merge_patch,
    path_of,
    rtg_path,
    wait_for,
)

pytestmark = pytest.mark.cluster

T = TypeVar("T")

NAME = "rtg"
CONFIG_HASH = "realtime.movenow.io/config-hash"
# The children every CR gets, as (apiVersion, plural, name).
CHILDREN = [
    ("v1", "services", NAME),
    ("v1", "configmaps", "rtg-config"),
    ("apps/v1", "deployments", NAME),
    ("autoscaling/v2", "horizontalpodautoscalers", NAME),
    ("policy/v1", "poddisruptionbudgets", NAME),
]
LABELS = {"app.kubernetes.io/name": "realtime-gateway", "app.kubernetes.io/instance": NAME}


def sample(namespace: str, **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "realtime.movenow.io/v1alpha1",
        "kind": "RealtimeGateway",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "image": "ghcr.io/movenow/realtime-gateway:0.1.0",
            "replicas": {"min": 2, "max": 5},
            "redis": {"url": "redis://127.0.0.1:6379/0"},
            "auth": {"jwtSecretRef": {"name": "jwt"}, "issuer": "movenow"},
            "connectionLimits": {"drainSeconds": 20, "maxConnectionsPerPod": 5000},
        },
    }
    obj["spec"].update(spec)
    return obj


def secret(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def get(kube: KubeCluster, api_version: str, plural: str, ns: str, name: str = NAME) -> dict[str, Any] | None:
    return kube.get_or_none(path_of(api_version, plural, ns, name))


def cr(kube: KubeCluster, ns: str) -> dict[str, Any]:
    return kube.request("GET", rtg_path(ns, NAME))


def wait_ready(kube: KubeCluster, ns: str, timeout: float = 90) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj = cr(kube, ns)
        gen = obj["metadata"]["generation"]
        st = obj.get("status", {})
        ok = condition(obj, "Ready").get("status") == "True" and st.get("observedGeneration") == gen
        return obj if ok else None

    return wait_for(ready, f"RealtimeGateway {ns}/{NAME} Ready with observedGeneration", timeout)


def apply_ready(kube: KubeCluster, ns: str, **spec: Any) -> dict[str, Any]:
    """Apply the sample CR (with ``spec`` overrides) and wait until it is Ready."""
    apply(kube, sample(ns, **spec))
    return wait_ready(kube, ns)


def wait_condition(
    kube: KubeCluster, ns: str, ctype: str, status: str, what: str, timeout: float = 60
) -> dict[str, Any]:
    """The CR once its ``ctype`` condition has ``status``."""

    def reached() -> dict[str, Any] | None:
        obj = cr(kube, ns)
        return obj if condition(obj, ctype).get("status") == status else None

    return wait_for(reached, what, timeout)


def deployment_available(kube: KubeCluster, ns: str) -> dict[str, Any] | None:
    dep = get(kube, "apps/v1", "deployments", ns)
    conds = {c["type"]: c["status"] for c in (dep or {}).get("status", {}).get("conditions", [])}
    return dep if conds.get("Available") == "True" else None


def replica_sets(kube: KubeCluster, ns: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.request(
        "GET", path_of("apps/v1", "replicasets", ns) + "?labelSelector=app.kubernetes.io/instance%3D" + NAME
    )["items"]
    return items


def events(kube: KubeCluster, ns: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.request(
        "GET", f"/api/v1/namespaces/{ns}/events?fieldSelector=involvedObject.name%3D{NAME}"
    )["items"]
    return [e for e in items if e.get("involvedObject", {}).get("kind") == "RealtimeGateway"]


def owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    refs = obj["metadata"].get("ownerReferences", [])
    return any(r["uid"] == owner["metadata"]["uid"] and r.get("controller") for r in refs)


def with_admin(bootstrap: str, use: Callable[[AIOKafkaAdminClient], Awaitable[T]]) -> T:
    """Run ``use`` with a started admin client, from sync test code."""

    async def run() -> T:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return await use(admin)
        finally:
            await admin.close()

    return asyncio.run(run())


def topic_partitions(bootstrap: str, topics: list[str]) -> dict[str, int]:
    async def use(admin: AIOKafkaAdminClient) -> dict[str, int]:
        existing = set(await admin.list_topics())
        described = await admin.describe_topics([t for t in topics if t in existing])
        return {t["topic"]: len(t["partitions"]) for t in described}

    return with_admin(bootstrap, use)


def unique_topics() -> dict[str, str]:
    """The four topic names of the CR's spec.kafka.topics, unique on the shared broker."""
    prefix = unique_name("rtg")
    return {
        k: f"{prefix}-{k.lower()}"
        for k in ("orderEvents", "porterEvents", "notificationEvents", "chatEvents")
    }


@pytest.fixture
def jwt_secret(kube: KubeCluster, kube_namespace: str) -> str:
    apply(kube, secret(kube_namespace, "jwt", {"secret": "s3cret-one"}))
    return "jwt"


def test_sample_cr_yields_every_child_and_becomes_ready(
    kube: KubeCluster,
    operator: ManagedProcess,
    kube_namespace: str,
    jwt_secret: str,
    kafka_broker: KafkaBroker,
) -> None:
    ns = kube_namespace
    topics = unique_topics()
    kafka = {"bootstrapServers": kafka_broker.bootstrap, "topics": topics, "partitions": 2}
    obj = apply_ready(kube, ns, kafka=kafka)
    st = obj["status"]
    assert st["selector"] == "app.kubernetes.io/instance=rtg,app.kubernetes.io/name=realtime-gateway"
    assert st["readyReplicas"] == 2 and st["replicas"] == 2
    assert condition(obj, "Degraded")["status"] == "False", condition(obj, "Degraded")

    # Deployment: Available with Ready pods on the kwok node, probes, env, hash, spread, drain.
    dep = wait_for(lambda: deployment_available(kube, ns), "Deployment Available")
    assert owned_by(dep, obj)
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == "ghcr.io/movenow/realtime-gateway:0.1.0"
    assert c["livenessProbe"]["httpGet"]["path"] == HEALTHZ_PATH
    assert c["readinessProbe"]["httpGet"]["path"] == READYZ_PATH
    assert c["envFrom"] == [{"configMapRef": {"name": "rtg-config"}}]
    env = {e["name"]: e for e in c["env"]}
    assert env[Env.JWT_SECRET]["valueFrom"]["secretKeyRef"] == {"name": "jwt", "key": "secret"}
    assert dep["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH] == st["configHash"]
    assert pod["terminationGracePeriodSeconds"] > 20
    assert "preferredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"]
    assert pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"] == LABELS

    # ConfigMap with the plain settings; Service; HPA; PDB — all owned by the CR.
    cm = get(kube, "v1", "configmaps", ns, "rtg-config")
    assert cm is not None and owned_by(cm, obj)
    assert cm["data"][Env.REDIS_URL] == "redis://127.0.0.1:6379/0"
    assert cm["data"][Env.KAFKA_BOOTSTRAP_SERVERS] == kafka_broker.bootstrap
    assert cm["data"][Env.KAFKA_TOPIC_CHAT_EVENTS] == topics["chatEvents"]
    assert cm["data"][Env.MAX_CONNECTIONS] == "5000"
    assert Env.JWT_SECRET not in cm["data"]
    svc = get(kube, "v1", "services", ns)
    assert svc is not None and owned_by(svc, obj)
    assert svc["spec"]["selector"] == LABELS and svc["spec"]["sessionAffinity"] == "None"
    assert st["sessionAffinity"] == "None"
    hpa = get(kube, "autoscaling/v2", "horizontalpodautoscalers", ns)
    assert hpa is not None and owned_by(hpa, obj)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert kinds["Pods"]["pods"]["metric"]["name"] == Metric.ACTIVE_CONNECTIONS
    assert kinds["Pods"]["pods"]["target"]["averageValue"] == "4k"  # the API server normalises 4000
    assert kinds["Object"]["object"]["target"]["value"] == "100m"
    resources = {m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"}
    assert resources == {"cpu", "memory"}
    pdb = get(kube, "policy/v1", "poddisruptionbudgets", ns)
    assert pdb is not None and owned_by(pdb, obj) and pdb["spec"]["maxUnavailable"] == 1
    board = get(kube, "v1", "configmaps", ns, "rtg-dashboard")
    assert board is not None and owned_by(board, obj)
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "realtime_active_connections" in board["data"]["realtime-gateway.json"]
    assert get(kube, "keda.sh/v1alpha1", "scaledobjects", ns) is None

    # Without the monitoring CRDs: still Ready, and a condition says why the objects are missing.
    mon = condition(obj, "Monitoring")
    assert mon["status"] == "False" and mon["reason"] == "MonitoringCRDsMissing"
    assert "ServiceMonitor not created" in mon["message"] and "PrometheusRule not created" in mon["message"]

    # Kafka wiring: the four topics exist with partitions >= replicas.max.
    kt = condition(obj, "KafkaTopics")
    assert kt["status"] == "True", kt
    want = dict.fromkeys(topics.values(), 5)
    wait_for(
        lambda: topic_partitions(kafka_broker.bootstrap, list(topics.values())) == want,
        "the broker's metadata shows the four topics with 5 partitions",
        timeout=30,
    )
    assert st["topics"] == want

    # Events on the CR for each child change.
    wait_for(
        lambda: {"ChildCreated", "ReadyTrue"} <= {e["reason"] for e in events(kube, ns)},
        "ChildCreated and ReadyTrue Events on the CR",
        timeout=30,
    )


def test_a_deleted_kafka_topic_is_recreated(
    kube: KubeCluster,
    operator: ManagedProcess,
    kube_namespace: str,
    jwt_secret: str,
    kafka_broker: KafkaBroker,
) -> None:
    ns = kube_namespace
    topics = unique_topics()
    apply_ready(kube, ns, kafka={"bootstrapServers": kafka_broker.bootstrap, "topics": topics})
    victim = topics["chatEvents"]

    with_admin(kafka_broker.bootstrap, lambda admin: admin.delete_topics([victim]))
    wait_for(
        lambda: topic_partitions(kafka_broker.bootstrap, [victim]) == {victim: 5},
        f"topic {victim} recreated with 5 partitions by the periodic recheck",
        timeout=60,
    )

    def created_twice() -> bool:  # once at first, once after the deletion (events are posted async)
        found = [e for e in events(kube, ns) if e["reason"] == "KafkaTopicCreated" and victim in e["message"]]
        return len(found) >= 2

    wait_for(created_twice, f"two KafkaTopicCreated events for {victim}", timeout=30)


def test_secret_and_config_changes_roll_the_deployment(
    kube: KubeCluster, operator: ManagedProcess, kube_namespace: str, jwt_secret: str
) -> None:
    ns = kube_namespace
    first = apply_ready(kube, ns)
    wait_for(lambda: deployment_available(kube, ns), "Deployment Available")
    hash1 = first["status"]["configHash"]
    rs1 = {r["metadata"]["labels"]["pod-template-hash"] for r in replica_sets(kube, ns)}

    # A referenced Secret changes: new config hash, new ReplicaSet (pod-template-hash).
    apply(kube, secret(ns, "jwt", {"secret": "s3cret-two"}))

    def rolled(previous: set[str]) -> set[str] | None:
        dep = get(kube, "apps/v1", "deployments", ns) or {}
        hashes = {r["metadata"]["labels"]["pod-template-hash"] for r in replica_sets(kube, ns)}
        new = hashes - previous
        ann = dep.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})
        return new if new and ann.get(CONFIG_HASH) not in (None, hash1) else None

    rs2 = wait_for(lambda: rolled(rs1), "a new ReplicaSet after the Secret changed")

    def rehashed() -> dict[str, Any] | None:
        # A Secret change leaves the CR's generation alone, so Ready alone may be the old status.
        obj = cr(kube, ns)
        return obj if obj.get("status", {}).get("configHash") not in (None, hash1) else None

    wait_for(rehashed, "status.configHash after the Secret changed")
    second = wait_ready(kube, ns)
    hash2 = second["status"]["configHash"]
    assert hash2 != hash1

    # A config field changes (log level, rendered into the ConfigMap): rolls again.
    body = sample(ns, logLevel="DEBUG")
    apply(kube, body)
    wait_for(
        lambda: (
            (get(kube, "v1", "configmaps", ns, "rtg-config") or {}).get("data", {}).get(Env.LOG_LEVEL)
            == "DEBUG"
        ),
        "ConfigMap carries the new log level",
    )
    hash1 = hash2
    wait_for(lambda: rolled(rs1 | rs2), "a new ReplicaSet after the config changed")
    third = wait_ready(kube, ns)
    assert (
        third["status"]["observedGeneration"]
        == third["metadata"]["generation"]
        > second["metadata"]["generation"]
    )


def test_deleted_or_edited_children_are_repaired(
    kube: KubeCluster, operator: ManagedProcess, kube_namespace: str, jwt_secret: str
) -> None:
    ns = kube_namespace
    apply_ready(kube, ns)
    for api_version, plural, name in CHILDREN:
        old = get(kube, api_version, plural, ns, name)
        assert old is not None
        kube.request("DELETE", path_of(api_version, plural, ns, name))

        def recreated(
            api_version: str = api_version,
            plural: str = plural,
            name: str = name,
            old_uid: str = old["metadata"]["uid"],
        ) -> bool:
            new = get(kube, api_version, plural, ns, name)
            return new is not None and new["metadata"]["uid"] != old_uid

        wait_for(recreated, f"{plural}/{name} recreated after deletion", timeout=30)

    # An edit of a field the operator owns is reverted.
    merge_patch(kube, path_of("v1", "services", ns, NAME), {"spec": {"sessionAffinity": "ClientIP"}})
    wait_for(
        lambda: (get(kube, "v1", "services", ns) or {}).get("spec", {}).get("sessionAffinity") == "None",
        "Service sessionAffinity edit reverted",
        timeout=30,
    )
    wait_ready(kube, ns)
    wait_for(
        lambda: {"ChildCreated", "ChildUpdated"} <= {e["reason"] for e in events(kube, ns)},
        "ChildCreated and ChildUpdated Events on the CR",
        timeout=30,
    )


def test_deleting_the_cr_garbage_collects_children(
    kube: KubeCluster, operator: ManagedProcess, kube_namespace: str, jwt_secret: str
) -> None:
    ns = kube_namespace
    apply_ready(kube, ns)
    kube.request("DELETE", rtg_path(ns, NAME))
    children = [*CHILDREN, ("v1", "configmaps", "rtg-dashboard")]
    wait_for(lambda: kube.get_or_none(rtg_path(ns, NAME)) is None, "RealtimeGateway deleted", timeout=60)
    wait_for(
        lambda: all(get(kube, a, p, ns, n) is None for a, p, n in children),
        "children garbage-collected",
        timeout=90,
    )
    wait_for(lambda: not replica_sets(kube, ns), "ReplicaSets garbage-collected", timeout=90)


def test_pause_annotation_stops_reconciliation(
    kube: KubeCluster, operator: ManagedProcess, kube_namespace: str, jwt_secret: str
) -> None:
    ns = kube_namespace
    apply_ready(kube, ns)
    merge_patch(
        kube, rtg_path(ns, NAME), {"metadata": {"annotations": {"realtime.movenow.io/paused": "true"}}}
    )

    paused = wait_condition(kube, ns, "Paused", "True", "Paused=True condition")
    assert "realtime.movenow.io/paused" in condition(paused, "Paused")["message"]
    # From now on a deleted child stays deleted.
    kube.request("DELETE", path_of("v1", "services", ns, NAME))
    hold(
        lambda: get(kube, "v1", "services", ns) is None,
        "Service stays deleted while paused",
        4 * RESYNC_SECONDS,
    )
    merge_patch(kube, rtg_path(ns, NAME), {"metadata": {"annotations": {"realtime.movenow.io/paused": None}}})
    wait_for(
        lambda: get(kube, "v1", "services", ns) is not None, "Service recreated after unpausing", timeout=30
    )


def test_polling_sets_session_affinity_and_says_so(
    kube: KubeCluster, operator: ManagedProcess, kube_namespace: str, jwt_secret: str
) -> None:
    ns = kube_namespace
    obj = apply_ready(kube, ns, transports=["websocket", "polling"])
    assert obj["status"]["sessionAffinity"] == "ClientIP"
    svc = get(kube, "v1", "services", ns)
    assert svc is not None and svc["spec"]["sessionAffinity"] == "ClientIP"


def test_missing_secret_is_reported_not_crashed(
    kube: KubeCluster, operator: ManagedProcess, kube_namespace: str
) -> None:
    ns = kube_namespace
    apply(kube, sample(ns))

    obj = wait_condition(kube, ns, "Degraded", "True", "Degraded condition for the missing Secret")
    assert "Secret jwt not found" in condition(obj, "Degraded")["message"]
    assert condition(obj, "Ready")["status"] == "False"
    apply(kube, secret(ns, "jwt", {"secret": "now-here"}))
    wait_ready(kube, ns)


def test_unreachable_kafka_is_a_condition(
    kube: KubeCluster, operator: ManagedProcess, kube_namespace: str, jwt_secret: str
) -> None:
    ns = kube_namespace
    apply(kube, sample(ns, kafka={"bootstrapServers": "127.0.0.1:1"}))

    obj = wait_condition(kube, ns, "KafkaTopics", "False", "KafkaTopics=False for an unreachable broker")
    assert "127.0.0.1:1" in condition(obj, "KafkaTopics")["message"]
    assert condition(obj, "Degraded")["status"] == "True"
    assert operator.alive()
    wait_ready(kube, ns)  # the gateway itself still rolls out


def test_monitoring_and_keda_objects_when_their_crds_exist(
    kube: KubeCluster, operator: ManagedProcess, kube_namespace: str, jwt_secret: str
) -> None:
    ns = kube_namespace
    names = install_crds(kube, TESTDATA / "monitoring-crds.yaml") + install_crds(
        kube, TESTDATA / "keda-crd.yaml"
    )
    try:
        apply(kube, sample(ns, monitoring={"labels": {"release": "prom"}}))

        obj = wait_condition(kube, ns, "Monitoring", "True", "Monitoring=True with the CRDs installed")
        sm = get(kube, "monitoring.coreos.com/v1", "servicemonitors", ns)
        pr = get(kube, "monitoring.coreos.com/v1", "prometheusrules", ns)
        assert sm is not None and pr is not None
        assert owned_by(sm, obj) and owned_by(pr, obj)
        assert sm["metadata"]["labels"]["release"] == "prom"
        assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
        alerts = {r.get("alert") for g in pr["spec"]["groups"] for r in g["rules"]}
        assert "RealtimeGatewayNoHealthyInstances" in alerts

        # engine keda: a ScaledObject replaces the HPA (never both).
        body = copy.deepcopy(
            sample(ns, monitoring={"labels": {"release": "prom"}}, autoscaling={"engine": "keda"})
        )
        apply(kube, body)
        wait_for(
            lambda: (
                get(kube, "keda.sh/v1alpha1", "scaledobjects", ns) is not None
                and get(kube, "autoscaling/v2", "horizontalpodautoscalers", ns) is None
            ),
            "ScaledObject present and HPA gone under engine keda",
        )
        so = get(kube, "keda.sh/v1alpha1", "scaledobjects", ns)
        assert so is not None and so["spec"]["maxReplicaCount"] == 5
        wait_ready(kube, ns)
    finally:
        kube.request("DELETE", rtg_path(ns, NAME))
        delete_crds(kube, names)


def resolve_pod_env(kube: KubeCluster, ns: str, dep: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The container environment as the kubelet builds it, from live objects only."""
    c = dep["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        cm = kube.request("GET", path_of("v1", "configmaps", ns, source["configMapRef"]["name"]))
        env |= cm["data"]

    def secret_value(name: str, key: str) -> str:
        data = kube.request("GET", path_of("v1", "secrets", ns, name))["data"]
        return base64.b64decode(data[key]).decode()

    return env | resolve_env_entries(c.get("env", []), secret_value, pod_name)


def test_a_gateway_started_with_the_live_deployment_env_serves_readyz(
    kube: KubeCluster,
    operator: ManagedProcess,
    kube_namespace: str,
    redis_server: Any,
    kafka_broker: KafkaBroker,
    gateway_factory: Any,
) -> None:
    from tests.support.gateway_fixtures import TEST_JWT_SECRET

    ns = kube_namespace
    apply(kube, secret(ns, "jwt", {"secret": TEST_JWT_SECRET}))
    topics = unique_topics()
    kafka = {"bootstrapServers": kafka_broker.bootstrap, "topics": topics}
    obj = apply_ready(kube, ns, redis={"url": redis_server.url}, kafka=kafka)
    assert condition(obj, "KafkaTopics")["status"] == "True"
    dep = wait_for(lambda: deployment_available(kube, ns), "Deployment Available")
    pods = kube.request(
        "GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=app.kubernetes.io/instance%3D{NAME}"
    )
    pod_name = pods["items"][0]["metadata"]["name"]
    env = resolve_pod_env(kube, ns, dep, pod_name)
    assert (
        env[Env.REDIS_URL] == redis_server.url and env[Env.KAFKA_BOOTSTRAP_SERVERS] == kafka_broker.bootstrap
    )
    # The pod binds 0.0.0.0:8080; on this shared machine the process gets a free loopback port.
    env = {k: v for k, v in env.items() if k not in (Env.HOST, Env.PORT)}
    gateway = gateway_factory(name=pod_name, **env)  # returns once /readyz answered 200
    status, body = gateway.readyz()
    assert status == 200, body
    assert body["instance"] == pod_name and body["mode"] == "redis-standalone"
    assert body["checks"].get("redis") is True and body["checks"].get("kafka") is True, body
