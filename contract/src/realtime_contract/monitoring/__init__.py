"""Alert rules and the Grafana dashboard the operator and the chart ship (files beside this module)."""

from __future__ import annotations

from importlib import resources
from typing import Final

RULES_FILE: Final = "prometheus-rules.yaml"
DASHBOARD_FILE: Final = "grafana-dashboard.json"


def read_text(name: str) -> str:
    """The text of one shipped monitoring file (``RULES_FILE`` or ``DASHBOARD_FILE``)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def prometheus_rules_yaml() -> str:
    return read_text(RULES_FILE)


def grafana_dashboard_json() -> str:
    return read_text(DASHBOARD_FILE)
