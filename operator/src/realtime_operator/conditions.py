"""Status conditions: a pure function from what reconcile observed to the CR's status block."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
MONITORING = "Monitoring"
KAFKA_TOPICS = "KafkaTopics"
PAUSED = "Paused"


@dataclass(frozen=True)
class Observed:
    """What one reconcile pass saw and did."""

    generation: int
    deployment: Mapping[str, Any] | None = None
    # kind -> why it is not there although the spec asks for it (API not served, ...)
    missing: Mapping[str, str] = field(default_factory=dict)
    # kinds the spec switched off (monitoring.serviceMonitor: false, ...)
    disabled: Sequence[str] = ()
    errors: Sequence[str] = ()
    kafka_ok: bool | None = None  # None: no Kafka configured or topics not managed
    kafka_message: str = ""


def deployment_state(dep: Mapping[str, Any] | None) -> tuple[bool, bool, str]:
    """(available, rolled_out, human summary) of a live Deployment."""
    if dep is None:
        return False, False, "Deployment not created yet"
    spec, status = dep.get("spec", {}), dep.get("status", {})
    want = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    ready = int(status.get("readyReplicas", 0))
    total = int(status.get("replicas", 0))
    synced = int(status.get("observedGeneration", 0)) >= int(dep.get("metadata", {}).get("generation", 0))
    conds = {c.get("type"): c.get("status") for c in status.get("conditions", [])}
    available = conds.get("Available") == "True" and ready > 0
    rolled_out = synced and updated == want and total == want and ready == want
    return available, rolled_out, f"{ready}/{want} pods ready, {updated} updated"


def _cond(ctype: str, ok: bool, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {
        "type": ctype,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def conditions(obs: Observed) -> list[dict[str, Any]]:
    g = obs.generation
    available, rolled_out, summary = deployment_state(obs.deployment)
    out: list[dict[str, Any]] = []

    if obs.errors:
        ready = _cond(READY, False, "ReconcileFailed", "; ".join(obs.errors), g)
    elif not available:
        ready = _cond(READY, False, "DeploymentUnavailable", summary, g)
    else:
        ready = _cond(READY, True, "Available", summary, g)
    out.append(ready)

    if obs.deployment is not None and not rolled_out:
        out.append(_cond(PROGRESSING, True, "RollingOut", summary, g))
    else:
        out.append(_cond(PROGRESSING, False, "Complete" if obs.deployment else "NotStarted", summary, g))

    problems = list(obs.errors)
    if obs.kafka_ok is False:
        problems.append(f"Kafka topics: {obs.kafka_message}")
    for kind, why in obs.missing.items():
        if kind == "ScaledObject":  # the autoscaler is part of the requested shape; monitoring is optional
            problems.append(f"{kind}: {why}")
    if problems:
        out.append(
            _cond(
                DEGRADED,
                True,
                "ChildrenFailing" if obs.errors else "DependencyMissing",
                "; ".join(problems),
                g,
            )
        )
    else:
        out.append(_cond(DEGRADED, False, "AsExpected", "all children applied", g))

    mon_missing = {k: v for k, v in obs.missing.items() if k in ("ServiceMonitor", "PrometheusRule")}
    if mon_missing:
        msg = "; ".join(f"{k} not created: {v}" for k, v in sorted(mon_missing.items()))
        out.append(_cond(MONITORING, False, "MonitoringCRDsMissing", msg, g))
    elif set(obs.disabled) >= {"ServiceMonitor", "PrometheusRule"}:
        out.append(_cond(MONITORING, False, "Disabled", "spec.monitoring disables both objects", g))
    else:
        out.append(
            _cond(MONITORING, True, "Created", "ServiceMonitor and PrometheusRule applied as requested", g)
        )

    if obs.kafka_ok is not None:
        reason = "TopicsReady" if obs.kafka_ok else "TopicsFailed"
        out.append(_cond(KAFKA_TOPICS, obs.kafka_ok, reason, obs.kafka_message, g))
    out.append(_cond(PAUSED, False, "Reconciling", "the operator reconciles this gateway", g))
    return out


def paused(previous: Sequence[Mapping[str, Any]], generation: int, annotation: str) -> list[dict[str, Any]]:
    """The previous conditions with Paused=True: nothing else is touched while paused."""
    msg = f"reconciliation stopped by the annotation {annotation}=true; children are left as they are"
    others = [dict(c) for c in previous if c.get("type") != PAUSED]
    return [*others, _cond(PAUSED, True, "PauseAnnotation", msg, generation)]


def merge(
    previous: Sequence[Mapping[str, Any]], new: Sequence[dict[str, Any]], now: str
) -> list[dict[str, Any]]:
    """Keep lastTransitionTime when a condition's status did not change."""
    before = {c.get("type"): c for c in previous}
    out = []
    for c in new:
        old = before.get(c["type"])
        same = old is not None and old.get("status") == c["status"] and old.get("lastTransitionTime")
        out.append({**c, "lastTransitionTime": old["lastTransitionTime"] if same and old else now})
    return out


def changed(previous: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> list[str]:
    """Condition types whose status or reason changed (each becomes an Event)."""
    before = {c.get("type"): (c.get("status"), c.get("reason")) for c in previous}
    return [str(c["type"]) for c in new if before.get(c["type"]) != (c.get("status"), c.get("reason"))]
