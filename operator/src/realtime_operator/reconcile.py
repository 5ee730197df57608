"""One reconcile pass: gather facts, server-side-apply every builder's child, report status.

Idempotent and level-based: it runs on every change of the CR, of a child or of a referenced
Secret, and periodically; each pass converges the cluster to what the spec says.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from realtime_contract import CRD_GROUP, CRD_PLURAL, CRD_VERSION

from . import conditions, naming
from .kafka_topics import KafkaAuth, TopicsResult, ensure_topics
from .kube import Kube, api_message
from .model import CAP_KEDA, CAP_PROMETHEUS_RULE, CAP_SERVICE_MONITOR, Gateway, GatewaySpec
from .resources import CHILD_KINDS, configmap
from .settings import OperatorSettings

log = logging.getLogger(__name__)
CR_API_VERSION = f"{CRD_GROUP}/{CRD_VERSION}"


@dataclass
class GatewayState:
    """Per-CR memory between passes (lives in kopf's per-object memo)."""

    versions: dict[str, str] = field(default_factory=dict)  # "Kind/name" -> last seen resourceVersion
    kafka_key: tuple[Any, ...] | None = None
    kafka_result: TopicsResult | None = None
    kafka_checked_at: float = 0.0
    secret_names: frozenset[str] = frozenset()


def is_paused(body: Mapping[str, Any]) -> bool:
    return (
        str(body.get("metadata", {}).get("annotations", {}).get(naming.PAUSE_ANNOTATION, "")).lower()
        == "true"
    )


def config_hash(config: Mapping[str, str], secrets: Mapping[str, Mapping[str, str] | None]) -> str:
    """Hash of everything the pods read at start but a pod-template diff would not show."""
    doc = json.dumps({"config": config, "secrets": secrets}, sort_keys=True).encode()
    return hashlib.sha256(doc).hexdigest()[:16]


async def capabilities(kube: Kube) -> frozenset[str]:
    caps: set[str] = set()
    for cap in (CAP_SERVICE_MONITOR, CAP_PROMETHEUS_RULE, CAP_KEDA):
        api_version, _, kind = cap.rpartition("/")
        if kind in await kube.served_kinds(api_version):
            caps.add(cap)
    return frozenset(caps)


def _event(body: Mapping[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
    try:
        (kopf.warn if warning else kopf.info)(kopf.Body(cast(Any, body)), reason=reason, message=message)
    except LookupError:  # outside an operator context (e.g. tests calling reconcile directly)
        log.info("event %s: %s", reason, message)


async def _kafka(
    gw: Gateway,
    owner: Mapping[str, Any],
    state: GatewayState,
    settings: OperatorSettings,
    secrets: Mapping[str, Any],
) -> TopicsResult | None:
    k = gw.spec.kafka
    if k is None or not k.manage_topics:
        return None
    want = max(k.partitions or 1, gw.spec.replicas.max)
    auth = KafkaAuth(security_protocol=k.security_protocol, sasl_mechanism=k.sasl_mechanism)
    if k.secret_ref is not None:
        data = secrets.get(k.secret_ref.name) or {}
        auth = dataclasses.replace(
            auth,
            username=_b64(data.get("username")),
            password=_b64(data.get("password")),
        )
    key = (k.bootstrap_servers, tuple(k.topics.names()), want, k.replication_factor, auth)
    # A success is trusted for a while (a deleted topic comes back at the next recheck), a failure
    # only until the retry period has passed; a changed key (servers, topics, size) checks at once.
    age = time.monotonic() - state.kafka_checked_at
    last = state.kafka_result
    trusted_for = settings.kafka_recheck_seconds if last and last.ok else settings.kafka_retry_seconds
    if state.kafka_key == key and last is not None and age < trusted_for:
        return last
    result = await ensure_topics(
        k.bootstrap_servers,
        k.topics.names(),
        min_partitions=want,
        replication_factor=k.replication_factor,
        auth=auth,
        timeout=settings.kafka_timeout_seconds,
    )
    previous = state.kafka_result
    state.kafka_key, state.kafka_result, state.kafka_checked_at = key, result, time.monotonic()
    if not result.ok and (previous is None or previous.ok or previous.message != result.message):
        _event(owner, "KafkaTopicsFailed", result.message, warning=True)
    for t in result.created:
        _event(owner, "KafkaTopicCreated", f"topic {t} created with {want} partitions")
    for t in result.grown:
        _event(owner, "KafkaTopicGrown", f"topic {t} grown to {want} partitions")
    return result


def _b64(value: str | None) -> str | None:
    return base64.b64decode(value).decode() if value else None


async def reconcile(
    kube: Kube, body: Mapping[str, Any], state: GatewayState, settings: OperatorSettings
) -> dict[str, Any]:
    """Converge the children of one RealtimeGateway; returns (and writes) its status."""
    meta = body["metadata"]
    name, namespace = str(meta["name"]), str(meta["namespace"])
    generation = int(meta.get("generation", 0))
    owner = {
        "apiVersion": body.get("apiVersion", CR_API_VERSION),
        "kind": body.get("kind", "RealtimeGateway"),
        "metadata": {"name": name, "namespace": namespace, "uid": meta.get("uid"), "labels": {}},
    }
    previous_conditions = list(body.get("status", {}).get("conditions", []) or [])

    try:
        spec = GatewaySpec.model_validate(dict(body.get("spec", {})))
    except ValidationError as exc:
        obs = conditions.Observed(generation, errors=[f"spec invalid: {exc.errors()[0]['msg']}"])
        return await _write_status(kube, owner, obs, previous_conditions, {})

    errors: list[str] = []
    # Facts: referenced Secrets, served APIs, the live Deployment.
    secrets: dict[str, Any] = {}
    for sname in sorted(spec.secret_names()):
        sec = await kube.get("v1", "secrets", namespace, sname)
        if sec is None:
            errors.append(f"Secret {sname} not found")
        secrets[sname] = (sec or {}).get("data")
    state.secret_names = frozenset(spec.secret_names())
    caps = await capabilities(kube)
    live_dep = await kube.get("apps/v1", "deployments", namespace, naming.workload(name))
    current = live_dep.get("spec", {}).get("replicas") if live_dep else None
    gw = Gateway(name, namespace, spec, current_replicas=current, capabilities=caps)
    gw = dataclasses.replace(gw, config_hash=config_hash(configmap.build(gw)["data"], secrets))

    missing: dict[str, str] = {}
    disabled: list[str] = []
    applied: list[str] = []
    deployment: dict[str, Any] | None = live_dep
    for ck in CHILD_KINDS:
        obj = ck.build(gw)
        child = ck.name(name)
        ref = f"{ck.kind}/{child}"
        try:
            if obj is None:
                disabled.append(ck.kind)
                if (ck.capability is None or ck.capability in caps) and await kube.delete(
                    ck.api_version, ck.plural, namespace, child
                ):
                    state.versions.pop(ref, None)
                    _event(owner, "ChildDeleted", f"{ck.kind} {child} deleted (not wanted by the spec)")
                continue
            if ck.capability is not None and ck.capability not in caps:
                missing[ck.kind] = f"the cluster does not serve {ck.capability.rpartition('/')[0]} {ck.kind}"
                continue
            kopf.adopt(
                obj, owner=kopf.Body(cast(Any, owner))
            )  # controller ownerReference: GC and drift watch
            before = state.versions.get(ref)
            if before is None:
                live = await kube.get(ck.api_version, ck.plural, namespace, child)
                before = live["metadata"]["resourceVersion"] if live else ""
            result = await kube.apply(obj, ck.plural, naming.FIELD_MANAGER)
            after = str(result.get("metadata", {}).get("resourceVersion", ""))
            state.versions[ref] = after
            applied.append(ref)
            if after != before:
                verb = "created" if before == "" else "updated"
                _event(owner, f"Child{verb.capitalize()}", f"{ck.kind} {child} {verb}")
            if ck.kind == "Deployment":
                deployment = result
        except ApiException as exc:
            msg = f"{ck.kind} {child}: {api_message(exc)}"
            errors.append(msg)
            _event(owner, "ApplyFailed", msg, warning=True)

    topics = await _kafka(gw, owner, state, settings, secrets)
    obs = conditions.Observed(
        generation,
        deployment=deployment,
        missing=missing,
        disabled=disabled,
        errors=errors,
        kafka_ok=None if topics is None else topics.ok,
        kafka_message="" if topics is None else topics.message,
    )
    extra: dict[str, Any] = {
        "configHash": gw.config_hash,
        "sessionAffinity": "ClientIP" if spec.polling else "None",
        "children": applied,
    }
    if topics is not None and topics.ok:
        extra["topics"] = topics.partitions
    return await _write_status(kube, owner, obs, previous_conditions, extra)


async def mark_paused(kube: Kube, body: Mapping[str, Any]) -> None:
    """Say in status that reconciliation is paused (the one write a paused gateway gets)."""
    meta = body["metadata"]
    previous = list(body.get("status", {}).get("conditions", []) or [])
    if any(c.get("type") == conditions.PAUSED and c.get("status") == "True" for c in previous):
        return
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conds = conditions.merge(
        previous, conditions.paused(previous, int(meta.get("generation", 0)), naming.PAUSE_ANNOTATION), now
    )
    await kube.patch_status(
        CR_API_VERSION, CRD_PLURAL, str(meta["namespace"]), str(meta["name"]), {"conditions": conds}
    )
    _event(body, "Paused", f"reconciliation paused by {naming.PAUSE_ANNOTATION}")


async def _write_status(
    kube: Kube,
    owner: dict[str, Any],
    obs: conditions.Observed,
    previous: list[dict[str, Any]],
    extra: dict[str, Any],
) -> dict[str, Any]:
    name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conds = conditions.merge(previous, conditions.conditions(obs), now)
    for ctype in conditions.changed(previous, conds):
        c = next(c for c in conds if c["type"] == ctype)
        bad = (
            c["status"] == ("True" if ctype == conditions.DEGRADED else "False")
            and ctype != conditions.PROGRESSING
        )
        _event(
            owner,
            f"{ctype}{c['status']}",
            f"{ctype}={c['status']} ({c['reason']}): {c['message']}",
            warning=bad,
        )
    dep_status = (obs.deployment or {}).get("status", {})
    status: dict[str, Any] = {
        "observedGeneration": obs.generation,
        "replicas": int(dep_status.get("replicas", 0)),
        "readyReplicas": int(dep_status.get("readyReplicas", 0)),
        "selector": naming.selector_string(name),
        "conditions": conds,
        **extra,
    }
    await kube.patch_status(CR_API_VERSION, CRD_PLURAL, namespace, name, status)
    return status
