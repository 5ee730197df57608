"""`realtime-operator`: run the kopf operator with this package's handlers."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import kopf

from . import handlers
from .settings import OperatorSettings


def parse_args(argv: Sequence[str] | None = None) -> OperatorSettings:
    p = argparse.ArgumentParser(prog="realtime-operator", description=__doc__)
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    p.add_argument(
        "--kubeconfig", type=Path, help="kubeconfig file (default: in-cluster, then ~/.kube/config)"
    )
    p.add_argument(
        "--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL ('' = off)"
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--resync-seconds", type=float, default=30.0, help="drift repair / status refresh period")
    p.add_argument(
        "--kafka-retry-seconds", type=float, default=30.0, help="retry period after a topic failure"
    )
    p.add_argument("--kafka-recheck-seconds", type=float, default=300.0, help="recheck period after success")
    p.add_argument("--kafka-timeout-seconds", type=float, default=15.0)
    a = p.parse_args(argv)
    return OperatorSettings(
        namespaces=tuple(a.namespace),
        kubeconfig=a.kubeconfig,
        liveness=a.liveness or None,
        log_level=a.log_level,
        resync_seconds=a.resync_seconds,
        kafka_retry_seconds=a.kafka_retry_seconds,
        kafka_recheck_seconds=a.kafka_recheck_seconds,
        kafka_timeout_seconds=a.kafka_timeout_seconds,
    )


async def run(settings: OperatorSettings, *, stop_flag: asyncio.Event | None = None) -> None:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, settings)
    await kopf.operator(
        registry=registry,
        clusterwide=settings.clusterwide,
        namespaces=list(settings.namespaces),
        # One operator replica (the chart's Deployment uses Recreate): no peering objects needed.
        standalone=True,
        liveness_endpoint=settings.liveness,
        stop_flag=stop_flag,
    )


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, settings.log_level),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # aiohttp/kubernetes client chatter is noise at INFO.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Its DEBUG level logs whole response bodies (Secrets included): never below INFO.
    logging.getLogger("kubernetes_asyncio").setLevel(max(logging.INFO, getattr(logging, settings.log_level)))
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
