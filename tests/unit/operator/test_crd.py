"""The CRD file: one source of truth shipped by the chart, and consistent with the spec model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import jsonschema
import pytest
import yaml

from realtime_contract import CRD_GROUP, CRD_KIND, CRD_PLURAL, CRD_VERSION
from realtime_operator.model import Autoscaling, GatewaySpec, Placement, Redis

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
CRD = REPO / "crds" / "realtimegateways.yaml"
CHART_CRD = REPO / "charts" / "realtime-gateway-operator" / "crds" / "realtimegateways.yaml"
SAMPLE = REPO / "deploy" / "dev" / "realtimegateway.yaml"


def crd() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(CRD.read_text())
    return doc


def version() -> dict[str, Any]:
    v: dict[str, Any] = crd()["spec"]["versions"][0]
    return v


def spec_schema() -> dict[str, Any]:
    s: dict[str, Any] = version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return s


def test_chart_ships_the_same_crd() -> None:
    # The chart cannot symlink outside itself (helm package would break), so it carries a copy.
    assert CHART_CRD.read_bytes() == CRD.read_bytes(), "run: cp crds/realtimegateways.yaml " + str(
        CHART_CRD.relative_to(REPO).parent
    )


def test_identity_matches_the_shared_contract() -> None:
    doc = crd()
    assert doc["metadata"]["name"] == f"{CRD_PLURAL}.{CRD_GROUP}"
    assert doc["spec"]["group"] == CRD_GROUP and doc["spec"]["scope"] == "Namespaced"
    assert doc["spec"]["names"]["kind"] == CRD_KIND and doc["spec"]["names"]["plural"] == CRD_PLURAL
    assert version()["name"] == CRD_VERSION and version()["served"] and version()["storage"]


def test_subresources_and_printer_columns() -> None:
    v = version()
    assert v["subresources"]["status"] == {}
    assert v["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas.min",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    names = [c["name"] for c in v["additionalPrinterColumns"] if c.get("priority", 0) == 0]
    assert names == ["Ready", "Replicas", "Age"]


def test_every_issue_field_is_in_the_schema() -> None:
    props = spec_schema()["properties"]
    for key in [
        "image", "replicas", "resources", "autoscaling", "redis", "kafka", "auth", "rateLimits",
        "connectionLimits", "tls", "tracing", "monitoring", "transports", "placement", "disruption",
    ]:  # fmt: skip
        assert key in props, key


def test_enums_agree_with_the_model() -> None:
    props = spec_schema()["properties"]
    assert props["autoscaling"]["properties"]["engine"]["enum"] == list(
        get_args(Autoscaling.model_fields["engine"].annotation)
    )
    assert props["redis"]["properties"]["mode"]["enum"] == list(
        get_args(Redis.model_fields["mode"].annotation)
    )
    assert props["placement"]["properties"]["antiAffinity"]["enum"] == list(
        get_args(Placement.model_fields["anti_affinity"].annotation)
    )


def _defaults(schema: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, sub in schema.get("properties", {}).items():
        if "default" in sub and sub["default"] not in ({}, []):
            out[prefix + key] = sub["default"]
        out |= _defaults(sub, prefix + key + ".")
    return out


def test_model_defaults_match_crd_defaults() -> None:
    spec = GatewaySpec.model_validate(
        {
            "image": "x",
            "redis": {"url": "redis://r"},
            "auth": {"jwksUrl": "https://j"},
            "kafka": {"bootstrapServers": "k"},
        }
    ).model_dump(by_alias=True)
    checked = 0
    for dotted, default in _defaults(spec_schema()).items():
        value: Any = spec
        for part in dotted.split("."):
            value = None if value is None else value[part]
        if value is not None or dotted.count(".") == 0:  # defaults inside absent optional objects don't apply
            assert value == default, dotted
            checked += 1
    assert checked > 20


def test_dev_sample_validates_against_the_schema() -> None:
    sample = yaml.safe_load(SAMPLE.read_text())
    assert sample["kind"] == CRD_KIND
    jsonschema.validate(sample["spec"], spec_schema())
    GatewaySpec.model_validate(sample["spec"])
