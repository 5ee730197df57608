"""kopf registrations only: every path ends in reconcile.reconcile, run by one daemon per CR.

Watch events (the CR, its children, referenced Secrets) only wake that daemon; the daemon also
wakes every ``resync_seconds`` to repair drift and refresh status. One writer per CR means no
concurrent applies. The pause annotation stops the daemon (kopf's ``when`` filter).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException

from realtime_contract import (
    CRD_GROUP,
    CRD_PLURAL,
    CRD_VERSION,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    OPERATOR_APP_NAME,
)

from .kube import Kube, api_message
from .reconcile import GatewayState, is_paused, mark_paused, reconcile
from .settings import OperatorSettings

Key = tuple[str, str]  # (namespace, name)
# Watched so that a deleted or edited child is repaired at once, not at the next resync.
WATCHED_CHILDREN: tuple[tuple[str, str, str], ...] = (
    ("", "v1", "configmaps"),
    ("", "v1", "services"),
    ("apps", "v1", "deployments"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("policy", "v1", "poddisruptionbudgets"),
)
DEBOUNCE_SECONDS = 0.2


@dataclass
class Runtime:
    kube: Kube
    wakeups: dict[Key, asyncio.Event] = field(default_factory=dict)
    states: dict[Key, GatewayState] = field(default_factory=dict)
    # (namespace, secret) -> CRs whose pods read it
    secret_index: dict[Key, set[str]] = field(default_factory=dict)

    def wake(self, namespace: str | None, name: str | None) -> None:
        if namespace and name and (ev := self.wakeups.get((namespace, name))) is not None:
            ev.set()

    def index_secrets(self, key: Key, names: frozenset[str]) -> None:
        ns, cr = key
        for (sns, _), refs in list(self.secret_index.items()):
            if sns == ns:
                refs.discard(cr)
        for s in names:
            self.secret_index.setdefault((ns, s), set()).add(cr)


async def api_client(settings: OperatorSettings) -> tuple[ApiClient, Configuration]:
    cfg = Configuration()
    if settings.kubeconfig is not None:
        await kube_config.load_kube_config(config_file=str(settings.kubeconfig), client_configuration=cfg)
    else:
        try:
            kube_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        except kube_config.ConfigException:
            await kube_config.load_kube_config(client_configuration=cfg)
    return ApiClient(configuration=cfg), cfg


async def _sleep(wake: asyncio.Event, stopped: Any, seconds: float) -> None:
    """Until woken, stopped (kopf's flag: CR deleted, paused, operator exiting) or ``seconds`` pass."""
    waiters = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def _not_paused(body: kopf.Body, **_: Any) -> bool:
    return not is_paused(body)


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    resource = (CRD_GROUP, CRD_VERSION, CRD_PLURAL)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=CRD_GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=CRD_GROUP)
        settings.persistence.finalizer = f"{CRD_GROUP}/operator"
        settings.posting.level = logging.INFO
        settings.watching.server_timeout = 120
        memo.runtime = Runtime(Kube((await api_client(_op_settings))[0]))

    _op_settings = settings

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: Any, **_: Any) -> None:
        runtime: Runtime | None = memo.get("runtime")
        if runtime is not None:
            await runtime.kube.api.close()

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if _op_settings.kubeconfig is None:
            info: kopf.ConnectionInfo | None = kopf.login_with_service_account(
                **kwargs
            ) or kopf.login_with_kubeconfig(**kwargs)
            return info
        client, cfg = await api_client(_op_settings)
        await client.close()
        token = (cfg.api_key or {}).get("BearerToken") or (cfg.api_key or {}).get("authorization")
        return kopf.ConnectionInfo(
            server=str(cfg.host),
            ca_path=cfg.ssl_ca_cert,
            insecure=not cfg.verify_ssl,
            certificate_path=cfg.cert_file,
            private_key_path=cfg.key_file,
            scheme="Bearer" if token else None,
            token=token.removeprefix("Bearer ").strip() if token else None,
        )

    @kopf.daemon(*resource, registry=registry, when=_not_paused, cancellation_timeout=2.0, id="reconciler")
    async def reconciler(
        body: kopf.Body,
        name: str,
        namespace: str | None,
        memo: Any,
        stopped: Any,
        logger: Any,
        **_: Any,
    ) -> None:
        runtime: Runtime = memo.runtime
        key = (str(namespace), name)
        wake = runtime.wakeups.setdefault(key, asyncio.Event())
        state = runtime.states.setdefault(key, GatewayState())
        try:
            while not stopped:
                wake.clear()
                if is_paused(body):
                    with contextlib.suppress(ApiException):
                        await mark_paused(runtime.kube, body)
                else:
                    try:
                        await reconcile(runtime.kube, body, state, _op_settings)
                    except ApiException as exc:
                        # e.g. the CR vanished mid-pass, or RBAC: logged, retried at the next wake.
                        logger.warning(f"reconcile of {namespace}/{name} failed: {api_message(exc)}")
                    except Exception:
                        logger.exception(
                            f"reconcile of {namespace}/{name} crashed; retrying at the next resync"
                        )
                    runtime.index_secrets(key, state.secret_names)
                await _sleep(wake, stopped, _op_settings.resync_seconds)
                await asyncio.sleep(DEBOUNCE_SECONDS)  # coalesce a burst of watch events into one pass
        finally:
            runtime.wakeups.pop(key, None)
            runtime.states.pop(key, None)

    @kopf.on.event(*resource, registry=registry)
    async def gateway_changed(
        body: kopf.Body, type: str | None, name: str, namespace: str | None, memo: Any, **_: Any
    ) -> None:
        runtime: Runtime = memo.runtime
        if type != "DELETED" and is_paused(body):
            # The daemon is stopped by its filter, so the Paused condition is written from here.
            with contextlib.suppress(ApiException):
                await mark_paused(runtime.kube, body)
        runtime.wake(namespace, name)

    managed = {LABEL_MANAGED_BY: OPERATOR_APP_NAME}
    for group, version, plural in WATCHED_CHILDREN:

        @kopf.on.event(group, version, plural, registry=registry, labels=managed, id=f"child-{plural}")
        def child_changed(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
            memo.runtime.wake(namespace, labels.get(LABEL_INSTANCE))

    def _referenced(name: str, namespace: str | None, memo: Any, **_: Any) -> bool:
        runtime: Runtime | None = memo.get("runtime")
        return runtime is not None and bool(runtime.secret_index.get((str(namespace), name)))

    @kopf.on.event("", "v1", "secrets", registry=registry, when=_referenced)
    def secret_changed(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
        runtime: Runtime = memo.runtime
        for cr in list(runtime.secret_index.get((str(namespace), name), ())):
            runtime.wake(namespace, cr)
