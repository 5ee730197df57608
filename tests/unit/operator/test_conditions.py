"""Status conditions computed from what a reconcile pass observed."""

from __future__ import annotations

from typing import Any

import pytest

from realtime_operator import conditions as c

pytestmark = pytest.mark.unit


def dep(ready: int, want: int = 2, updated: int | None = None, available: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"generation": 4},
        "spec": {"replicas": want},
        "status": {
            "observedGeneration": 4,
            "replicas": want,
            "readyReplicas": ready,
            "updatedReplicas": want if updated is None else updated,
            "conditions": [{"type": "Available", "status": "True" if available else "False"}],
        },
    }


def by_type(conds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {x["type"]: x for x in conds}


def test_ready_when_the_deployment_is_available_and_rolled_out() -> None:
    conds = by_type(c.conditions(c.Observed(7, deployment=dep(2))))
    assert conds["Ready"]["status"] == "True" and conds["Ready"]["observedGeneration"] == 7
    assert conds["Progressing"]["status"] == "False"
    assert conds["Degraded"]["status"] == "False"


def test_progressing_during_a_rollout() -> None:
    conds = by_type(c.conditions(c.Observed(1, deployment=dep(2, updated=1))))
    assert conds["Progressing"]["status"] == "True" and conds["Progressing"]["reason"] == "RollingOut"
    assert conds["Ready"]["status"] == "True"


def test_not_ready_without_available_pods() -> None:
    conds = by_type(c.conditions(c.Observed(1, deployment=dep(0, available=False))))
    assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == "DeploymentUnavailable"


def test_errors_degrade_and_unready() -> None:
    conds = by_type(c.conditions(c.Observed(1, deployment=dep(2), errors=["Secret jwt not found"])))
    assert conds["Ready"]["status"] == "False" and "Secret jwt not found" in conds["Ready"]["message"]
    assert conds["Degraded"]["status"] == "True"


def test_missing_monitoring_crds_explained_but_still_ready() -> None:
    missing = {"ServiceMonitor": "the cluster does not serve monitoring.coreos.com/v1 ServiceMonitor"}
    conds = by_type(c.conditions(c.Observed(1, deployment=dep(2), missing=missing)))
    assert conds["Ready"]["status"] == "True"
    assert conds["Monitoring"]["status"] == "False"
    assert conds["Monitoring"]["reason"] == "MonitoringCRDsMissing"
    assert "ServiceMonitor not created" in conds["Monitoring"]["message"]
    assert conds["Degraded"]["status"] == "False"


def test_kafka_failure_degrades_but_keeps_ready() -> None:
    conds = by_type(
        c.conditions(c.Observed(1, deployment=dep(2), kafka_ok=False, kafka_message="unreachable"))
    )
    assert conds["Ready"]["status"] == "True"
    assert conds["KafkaTopics"]["status"] == "False"
    assert conds["Degraded"]["status"] == "True" and "unreachable" in conds["Degraded"]["message"]


def test_merge_keeps_transition_time_and_changed_lists_flips() -> None:
    first = c.merge([], c.conditions(c.Observed(1, deployment=dep(0, available=False))), "T1")
    second = c.merge(first, c.conditions(c.Observed(1, deployment=dep(2))), "T2")
    times = {x["type"]: x["lastTransitionTime"] for x in second}
    assert times["Ready"] == "T2" and times["Degraded"] == "T1"
    assert "Ready" in c.changed(first, second) and "Degraded" not in c.changed(first, second)


def test_keda_requested_but_not_installed_degrades() -> None:
    missing = {"ScaledObject": "the cluster does not serve keda.sh/v1alpha1 ScaledObject"}
    conds = by_type(c.conditions(c.Observed(1, deployment=dep(2), missing=missing)))
    assert conds["Degraded"]["status"] == "True" and conds["Degraded"]["reason"] == "DependencyMissing"
    assert "keda.sh" in conds["Degraded"]["message"]
    assert conds["Monitoring"]["status"] == "True"


def test_paused_keeps_other_conditions() -> None:
    before = c.merge([], c.conditions(c.Observed(3, deployment=dep(2))), "T1")
    after = by_type(c.merge(before, c.paused(before, 3, "realtime.movenow.io/paused"), "T2"))
    assert after["Paused"]["status"] == "True" and after["Paused"]["lastTransitionTime"] == "T2"
    assert after["Ready"]["status"] == "True" and after["Ready"]["lastTransitionTime"] == "T1"
