"""The gateway Deployment: probes, env from the ConfigMap and Secrets, spread, graceful drain."""

from __future__ import annotations

from typing import Any

from realtime_contract import DEFAULT_PORT, HEALTHZ_PATH, PORT_NAME, READYZ_PATH, Env

from .. import naming
from ..model import Gateway
from . import env
from ._common import metadata

KIND = "Deployment"
API_VERSION = "apps/v1"
# Kubernetes needs a moment after the drain to deliver SIGKILL; the grace period covers both.
GRACE_MARGIN_SECONDS = 15


def replicas(gw: Gateway) -> int:
    """Keep the autoscaler's live decision, clamped to the spec's bounds."""
    lo, hi = gw.spec.replicas.min, gw.spec.replicas.max
    current = gw.current_replicas if gw.current_replicas is not None else lo
    return max(lo, min(hi, current))


def scale_target_ref(gw: Gateway) -> dict[str, Any]:
    """The reference an autoscaler (HPA or KEDA ScaledObject) uses to name this Deployment."""
    return {"apiVersion": API_VERSION, "kind": KIND, "name": naming.workload(gw.name)}


def _affinity(gw: Gateway) -> dict[str, Any]:
    term = {
        "labelSelector": {"matchLabels": naming.selector_labels(gw.name)},
        "topologyKey": "kubernetes.io/hostname",
    }
    if gw.spec.placement.anti_affinity == "required":
        anti: dict[str, Any] = {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
    else:
        anti = {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]}
    return {"podAntiAffinity": anti}


def _probe(path: str, scheme: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME, "scheme": scheme},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def build(gw: Gateway) -> dict[str, Any]:
    spec = gw.spec
    scheme = "HTTPS" if spec.tls else "HTTP"
    container: dict[str, Any] = {
        "name": naming.CONTAINER,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "ports": [{"name": PORT_NAME, "containerPort": DEFAULT_PORT, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": naming.configmap(gw.name)}}],
        "env": [
            # Pod name as instance id: unique per pod and stable for its lifetime.
            {"name": Env.INSTANCE_ID, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            *env.secret_env(gw),
        ],
        "startupProbe": _probe(HEALTHZ_PATH, scheme, 2, 30),
        "livenessProbe": _probe(HEALTHZ_PATH, scheme, 10, 3),
        "readinessProbe": _probe(READYZ_PATH, scheme, 5, 2),
        "resources": spec.resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod: dict[str, Any] = {
        "terminationGracePeriodSeconds": spec.connection_limits.drain_seconds + GRACE_MARGIN_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "affinity": _affinity(gw),
        # A Service named like the CR would otherwise inject RTG_PORT=tcp://... style variables.
        "enableServiceLinks": False,
        "containers": [container],
    }
    if spec.placement.topology_spread.enabled:
        ts = spec.placement.topology_spread
        pod["topologySpreadConstraints"] = [
            {
                "maxSkew": ts.max_skew,
                "topologyKey": ts.topology_key,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": naming.selector_labels(gw.name)},
                "matchLabelKeys": ["pod-template-hash"],
            }
        ]
    if spec.placement.node_selector:
        pod["nodeSelector"] = spec.placement.node_selector
    if spec.placement.tolerations:
        pod["tolerations"] = spec.placement.tolerations
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in spec.image_pull_secrets]
    # The root filesystem is read-only; libraries that need scratch space get a small /tmp.
    pod["volumes"] = [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    if spec.tls is not None:
        pod["volumes"].append({"name": "tls", "secret": {"secretName": spec.tls.secret_name}})
        container["volumeMounts"].append({"name": "tls", "mountPath": naming.TLS_MOUNT, "readOnly": True})

    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(gw, naming.workload(gw.name)),
        "spec": {
            "replicas": replicas(gw),
            "selector": {"matchLabels": naming.selector_labels(gw.name)},
            # Never below the current capacity during a rollout: sockets drain before pods go.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
            "template": {
                "metadata": {
                    "labels": naming.labels(gw.name),
                    "annotations": {**spec.pod_annotations, naming.CONFIG_HASH_ANNOTATION: gw.config_hash},
                },
                "spec": pod,
            },
        },
    }
