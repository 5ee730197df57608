"""Fixtures of the operator's cluster tests: the CRD installed, the operator as a subprocess."""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kube_cluster import KubeCluster
from tests.support.procs import ManagedProcess, free_port, wait_until

from .helpers import CRD_FILE, RTG, install_crds

RESYNC_SECONDS = 2.0


@pytest.fixture(scope="session")
def rtg_crd(kube: KubeCluster) -> str:
    """The RealtimeGateway CRD from crds/, Established and served."""
    (name,) = install_crds(kube, CRD_FILE)
    wait_until(
        lambda: any(r["name"] == "realtimegateways" for r in kube.request("GET", RTG).get("resources", [])),
        timeout=60,
        what="realtimegateways served by discovery",
        interval=0.25,
    )
    return name


def start_operator(kubeconfig: Path, log_dir: Path, *scope: str) -> ManagedProcess:
    """`realtime-operator` as a subprocess; ``scope`` is --all-namespaces or --namespace=... flags."""
    port = free_port()
    proc = ManagedProcess(
        "realtime-operator",
        [
            sys.executable,
            "-m",
            "realtime_operator",
            *(scope or ("--all-namespaces",)),
            f"--kubeconfig={kubeconfig}",
            f"--liveness=http://127.0.0.1:{port}/healthz",
            f"--resync-seconds={RESYNC_SECONDS}",
            "--kafka-retry-seconds=5",
            "--kafka-recheck-seconds=5",
            "--kafka-timeout-seconds=10",
            "--log-level=DEBUG",
        ],
        log_dir,
    )

    def live() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return bool(r.status == 200)

    try:
        wait_until(live, timeout=60, what="operator liveness endpoint", proc=proc)
    except BaseException:
        proc.stop()
        raise
    return proc


# Module scope: a module that runs its own operator (test_chart.py) must not share the cluster
# with this one, or two operators would reconcile the same objects.
@pytest.fixture(scope="module")
def operator(
    kube: KubeCluster, rtg_crd: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ManagedProcess]:
    """`realtime-operator` against the test cluster as admin, all namespaces, fast resync."""
    proc = start_operator(kube.kubeconfig, tmp_path_factory.mktemp("operator"))
    try:
        yield proc
    finally:
        code = proc.stop()
        print(f"\n[operator] exited {code}; log: {proc.log_path}", file=sys.stderr)
