"""Each builder's output for representative specs (pure functions, no cluster)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from realtime_contract import HEALTHZ_PATH, READYZ_PATH, Env, Metric
from realtime_operator import naming
from realtime_operator.model import CAP_KEDA, CAP_PROMETHEUS_RULE, CAP_SERVICE_MONITOR, Gateway
from realtime_operator.resources import (
    CHILD_KINDS,
    configmap,
    dashboard,
    deployment,
    hpa,
    keda,
    pdb,
    prometheusrule,
    service,
    servicemonitor,
)

from .samples import body

pytestmark = pytest.mark.unit

ALL_CAPS = frozenset({CAP_KEDA, CAP_PROMETHEUS_RULE, CAP_SERVICE_MONITOR})


def gw(current: int | None = None, config_hash: str = "abc123", **spec: Any) -> Gateway:
    return Gateway.from_body(
        body(**spec), config_hash=config_hash, current_replicas=current, capabilities=ALL_CAPS
    )


def container(dep: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return c


def test_every_child_is_named_labelled_and_namespaced() -> None:
    g = gw()
    for ck in CHILD_KINDS:
        obj = ck.build(g)
        if obj is None:
            continue
        assert obj["apiVersion"] == ck.api_version and obj["kind"] == ck.kind
        assert obj["metadata"]["namespace"] == "team-a"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == ("realtime-gateway-operator")
        assert obj["metadata"]["name"] == ck.name("rtg")
    names = [(ck.kind, ck.name("rtg")) for ck in CHILD_KINDS]
    assert len(set(names)) == len(names), "two children would share a name"


def test_deployment_probes_env_hash_and_drain() -> None:
    dep = deployment.build(gw())
    c = container(dep)
    assert c["livenessProbe"]["httpGet"]["path"] == HEALTHZ_PATH
    assert c["readinessProbe"]["httpGet"]["path"] == READYZ_PATH
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTP"
    assert c["envFrom"] == [{"configMapRef": {"name": "rtg-config"}}]
    env = {e["name"]: e for e in c["env"]}
    assert env[Env.JWT_SECRET]["valueFrom"]["secretKeyRef"] == {"name": "jwt", "key": "secret"}
    assert env[Env.INSTANCE_ID]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    tmpl = dep["spec"]["template"]
    assert tmpl["metadata"]["annotations"][naming.CONFIG_HASH_ANNOTATION] == "abc123"
    assert tmpl["spec"]["terminationGracePeriodSeconds"] == 30 + deployment.GRACE_MARGIN_SECONDS
    assert dep["spec"]["selector"]["matchLabels"] == naming.selector_labels("rtg")
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert tmpl["spec"]["enableServiceLinks"] is False


def test_deployment_grace_period_exceeds_drain() -> None:
    dep = deployment.build(gw(connectionLimits={"drainSeconds": 120}))
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 120


@pytest.mark.parametrize(
    ("current", "expected"),
    [(None, 2), (1, 2), (4, 4), (9, 6)],
)
def test_deployment_replicas_keep_the_autoscaler_decision_within_bounds(
    current: int | None, expected: int
) -> None:
    assert deployment.build(gw(current))["spec"]["replicas"] == expected


def test_anti_affinity_required_and_preferred_and_spread() -> None:
    req = deployment.build(gw(placement={"antiAffinity": "required"}))["spec"]["template"]["spec"]
    terms = req["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms[0]["topologyKey"] == "kubernetes.io/hostname"
    pref = deployment.build(gw())["spec"]["template"]["spec"]
    assert "preferredDuringSchedulingIgnoredDuringExecution" in pref["affinity"]["podAntiAffinity"]
    spread = pref["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone" and spread["maxSkew"] == 1
    tol = [{"key": "dedicated", "operator": "Equal", "value": "rt", "effect": "NoSchedule"}]
    off = deployment.build(gw(placement={"topologySpread": {"enabled": False}, "tolerations": tol}))
    assert "topologySpreadConstraints" not in off["spec"]["template"]["spec"]
    assert off["spec"]["template"]["spec"]["tolerations"] == tol


def test_tls_mounts_the_secret_and_probes_https() -> None:
    g = gw(tls={"secretName": "gw-tls"})
    dep = deployment.build(g)
    pod = dep["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "gw-tls"}} in pod["volumes"]
    mounts = {m["name"]: m for m in container(dep)["volumeMounts"]}
    assert mounts["tls"] == {"name": "tls", "mountPath": naming.TLS_MOUNT, "readOnly": True}
    assert mounts["tmp"]["mountPath"] == "/tmp"
    assert container(dep)["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    data = configmap.build(g)["data"]
    assert data[Env.TLS_CERT_FILE].startswith(naming.TLS_MOUNT)
    assert g.spec.secret_names() == {"jwt", "gw-tls"}


def test_configmap_carries_plain_settings_and_no_credentials() -> None:
    data = configmap.build(gw())["data"]
    assert data[Env.REDIS_URL] == "redis://redis:6379/0"
    assert data[Env.KAFKA_BOOTSTRAP_SERVERS] == "kafka:9092"
    assert data[Env.KAFKA_TOPIC_ORDER_EVENTS] == "order-events"
    assert data[Env.JWT_ISSUER] == "movenow" and data[Env.JWT_AUDIENCE] == "realtime"
    assert data[Env.TRANSPORTS] == "websocket"
    assert Env.JWT_SECRET not in data
    assert all(isinstance(v, str) for v in data.values())


def test_redis_url_from_secret_is_a_secret_ref() -> None:
    g = gw(redis={"secretRef": {"name": "redis-cred", "key": "url"}, "mode": "cluster"})
    assert Env.REDIS_URL not in configmap.build(g)["data"]
    env = {e["name"]: e for e in container(deployment.build(g))["env"]}
    assert env[Env.REDIS_URL]["valueFrom"]["secretKeyRef"] == {"name": "redis-cred", "key": "url"}
    assert configmap.build(g)["data"][Env.REDIS_MODE] == "cluster"


def test_service_affinity_follows_polling() -> None:
    assert service.build(gw())["spec"]["sessionAffinity"] == "None"
    polling = service.build(gw(transports=["websocket", "polling"]))
    assert polling["spec"]["sessionAffinity"] == "ClientIP"
    assert polling["spec"]["selector"] == naming.selector_labels("rtg")


def test_hpa_targets_connections_latency_cpu_memory() -> None:
    h = hpa.build(gw())
    assert h is not None
    assert (h["spec"]["minReplicas"], h["spec"]["maxReplicas"]) == (2, 6)
    metrics = {m["type"] + ":" + str(m.get("resource", {}).get("name", "")): m for m in h["spec"]["metrics"]}
    pods = metrics["Pods:"]["pods"]
    assert pods["metric"]["name"] == Metric.ACTIVE_CONNECTIONS
    assert pods["target"] == {"type": "AverageValue", "averageValue": "4000"}
    obj = metrics["Object:"]["object"]
    assert obj["target"]["value"] == "100m" and obj["describedObject"]["kind"] == "Service"
    assert metrics["Resource:cpu"]["resource"]["target"]["averageUtilization"] == 70
    assert metrics["Resource:memory"]["resource"]["target"]["averageUtilization"] == 80


def test_engine_selects_hpa_or_keda_never_both() -> None:
    g_hpa, g_keda = gw(), gw(autoscaling={"engine": "keda", "connectionsPerPod": 3000})
    assert hpa.build(g_hpa) is not None and keda.build(g_hpa) is None
    assert hpa.build(g_keda) is None
    so = keda.build(g_keda)
    assert so is not None
    assert so["spec"]["scaleTargetRef"]["name"] == "rtg"
    triggers = {t["type"] + t.get("name", ""): t for t in so["spec"]["triggers"]}
    assert triggers["prometheusconnections"]["metadata"]["threshold"] == "3000"
    assert "cpu" in triggers and "memory" in triggers


def test_pdb_defaults_and_choices() -> None:
    assert pdb.build(gw())["spec"]["maxUnavailable"] == 1
    p = pdb.build(gw(disruption={"minAvailable": "50%"}))
    assert p["spec"]["minAvailable"] == "50%" and "maxUnavailable" not in p["spec"]


def test_monitoring_objects_and_switches() -> None:
    sm = servicemonitor.build(gw(monitoring={"labels": {"release": "prom"}}))
    assert sm is not None
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert sm["spec"]["selector"]["matchLabels"] == naming.selector_labels("rtg")
    pr = prometheusrule.build(gw())
    assert pr is not None
    groups = pr["spec"]["groups"]
    assert groups and all(g["name"].startswith("team-a-rtg-") for g in groups)
    exprs = " ".join(str(r.get("expr", "")) for g in groups for r in g["rules"])
    assert "realtime_" in exprs
    off = gw(monitoring={"serviceMonitor": False, "prometheusRule": False})
    assert servicemonitor.build(off) is None and prometheusrule.build(off) is None


def test_dashboard_configmap_for_grafanas_sidecar() -> None:
    cm = dashboard.build(gw(monitoring={"labels": {"release": "prom"}}))
    assert cm is not None and cm["metadata"]["name"] == "rtg-dashboard"
    assert (
        cm["metadata"]["labels"]["grafana_dashboard"] == "1" and cm["metadata"]["labels"]["release"] == "prom"
    )
    board = json.loads(cm["data"]["realtime-gateway.json"])
    assert board["panels"]
    assert dashboard.build(gw(monitoring={"grafanaDashboard": False})) is None


def test_builders_are_pure() -> None:
    g = gw()
    for ck in CHILD_KINDS:
        assert ck.build(g) == ck.build(g)
