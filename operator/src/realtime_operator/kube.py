"""A few typed, generic REST calls on kubernetes_asyncio's ApiClient (any kind, server-side apply)."""

from __future__ import annotations

import json
from typing import Any, cast

from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

_OBJECT = {200: "object", 201: "object"}


def object_path(api_version: str, plural: str, namespace: str, name: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


def api_message(exc: ApiException) -> str:
    """The API server's own message (e.g. a CEL rule's), else the HTTP reason."""
    try:
        return str(json.loads(exc.body or b"")["message"])
    except (TypeError, ValueError, KeyError):
        return f"{exc.status} {exc.reason}"


class Kube:
    def __init__(self, api: ApiClient) -> None:
        self.api = api

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        result = await self.api.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            response_types_map=_OBJECT,
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )
        return cast(dict[str, Any], result or {})

    async def get(self, api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call("GET", object_path(api_version, plural, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def apply(self, obj: dict[str, Any], plural: str, field_manager: str) -> dict[str, Any]:
        """Server-side apply; force because this operator is the authority on what it declares."""
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], plural, meta["namespace"], meta["name"])
        return await self._call(
            "PATCH",
            path,
            body=obj,
            query=[("fieldManager", field_manager), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    async def delete(self, api_version: str, plural: str, namespace: str, name: str) -> bool:
        try:
            await self._call(
                "DELETE",
                object_path(api_version, plural, namespace, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def patch_status(
        self, api_version: str, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        await self._call(
            "PATCH",
            object_path(api_version, plural, namespace, name) + "/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    async def served_kinds(self, api_version: str) -> set[str]:
        """Kinds the cluster serves in one group/version (empty when the group is not installed)."""
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            doc = await self._call("GET", base)
        except ApiException as exc:
            if exc.status in (404, 503):
                return set()
            raise
        return {str(r["kind"]) for r in doc.get("resources", []) if "/" not in str(r.get("name", ""))}
