"""The operator's own settings, from its command line (no environment reads)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OperatorSettings:
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    kubeconfig: Path | None = None  # None: in-cluster service account
    liveness: str | None = "http://0.0.0.0:8080/healthz"
    log_level: str = "INFO"
    # Drift and status check period for each RealtimeGateway (events wake it earlier).
    resync_seconds: float = 30.0
    # How long a failed Kafka topic check is trusted before it is retried.
    kafka_retry_seconds: float = 30.0
    # How long a successful Kafka topic check is trusted before topics are checked again.
    kafka_recheck_seconds: float = 300.0
    kafka_timeout_seconds: float = 15.0

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces
