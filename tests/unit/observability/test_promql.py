"""The alert rules and the dashboard's queries, checked by Prometheus's own parser.

``promtool`` itself does not build in reasonable time here (its service-discovery dependencies
are hundreds of modules), so ``rulecheck/`` is a small Go program over the same code promtool's
``check rules`` runs: ``model/rulefmt`` (rule-file structure, PromQL, templates) and
``promql/parser``. It is built once per source version into the cache directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from realtime_contract import monitoring

pytestmark = pytest.mark.unit

SOURCE = Path(__file__).parent / "rulecheck"
PROMETHEUS_VERSION = "v0.316.0"
RULES = Path(monitoring.__file__).parent / monitoring.RULES_FILE


def _go() -> str:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        pytest.fail("go not found: install Go >= 1.24 (https://go.dev/dl/) to check the alert rules")
    return go


@pytest.fixture(scope="module")
def rulecheck() -> Path:
    digest = hashlib.sha256(b"".join((SOURCE / n).read_bytes() for n in ("main.go", "go.mod", "go.sum")))
    cache = Path(os.environ.get("RTG_CACHE_DIR", Path.home() / ".cache" / "realtime-gateway"))
    binary = cache / f"rulecheck-prometheus-{PROMETHEUS_VERSION}-{digest.hexdigest()[:12]}" / "rulecheck"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GOFLAGS": "-mod=readonly", "CGO_ENABLED": "0"}
        result = subprocess.run(
            [_go(), "build", "-o", str(binary), "."],
            cwd=SOURCE,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, f"building rulecheck failed:\n{result.stderr[-3000:]}"
    return binary


def run(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60, check=False)


def test_rules_file_passes_prometheus_rule_parsing(rulecheck: Path) -> None:
    result = run(rulecheck, str(RULES))
    assert result.returncode == 0, result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_dashboard_queries_are_valid_promql(rulecheck: Path, tmp_path: Path) -> None:
    dashboard = json.loads(monitoring.grafana_dashboard_json())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 20
    # Grafana substitutes $__rate_interval before the query reaches Prometheus.
    (tmp_path / "exprs.txt").write_text("\n".join(e.replace("$__rate_interval", "5m") for e in exprs))
    result = run(rulecheck, "-exprs", str(tmp_path / "exprs.txt"))
    assert result.returncode == 0, result.stderr
    assert f"{len(exprs)} expressions parsed" in result.stdout


def test_the_checker_rejects_broken_rules(rulecheck: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "groups:\n- name: g\n  rules:\n"
        "  - alert: Broken\n    expr: sum(rate(realtime_redis_errors_total[5m])\n"
        "  - alert: BadTemplate\n    expr: up == 0\n    annotations:\n      summary: '{{ $labels.instance'\n"
    )
    result = run(rulecheck, str(bad))
    assert result.returncode != 0
    assert "unclosed left parenthesis" in result.stderr
