"""The Grafana dashboard (sophia_assets.metrics.dashboard): the committed JSON is the generator's
output, its rows follow the data path, its queries name only the exported metric families and
are valid PromQL, and the `dagster` stack provisions it next to the alert rules."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from sophia_assets.home import PROJECT_ROOT
from sophia_assets.metrics.dashboard import dashboard_json
from tests.support.metric_families import HISTOGRAMS, SERIES
from tests.support.prometheus import promtool
from tests.test_infra_programs import DAGSTER_SECRETS, _run

COMMITTED = PROJECT_ROOT / "deploy" / "monitoring" / "dashboard.json"
DATA_PATH = ["Capture", "Derivation", "Index", "API", "Quarantine", "Health"]

# The scrape jobs of deploy/monitoring/prometheus.yml a panel may name.
JOBS = {"sophia-flow-serve", "sophia-search-api", "sophia-runs"}

# Grafana's own variables are not PromQL; promtool sees typical values instead.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def _dashboard() -> dict:
    return json.loads(dashboard_json())


def _rows(board: dict) -> dict[str, list[dict]]:
    """Each row's title with the panels under it, in order (rows are left expanded)."""
    rows: dict[str, list[dict]] = {}
    for panel in board["panels"]:
        if panel["type"] == "row":
            rows[panel["title"]] = []
        else:
            rows[list(rows)[-1]].append(panel)
    return rows


def _queries(board: dict) -> list[tuple[str, str]]:
    return [
        (f"panel_{panel['id']}:{target['refId']}", target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def test_committed_dashboard_is_the_generated_one() -> None:
    assert COMMITTED.read_text() == dashboard_json(), (
        "deploy/monitoring/dashboard.json is stale; regenerate it with "
        "`uv run python -m sophia_assets.metrics.dashboard > deploy/monitoring/dashboard.json`"
    )


def test_dashboard_json_is_deterministic() -> None:
    assert dashboard_json() == dashboard_json()
    assert dashboard_json().endswith("}\n")


def test_rows_follow_the_data_path_left_to_right() -> None:
    rows = _rows(_dashboard())
    assert list(rows) == DATA_PATH
    assert all(rows.values()), "every row has panels"
    titles = {row: [p["title"] for p in panels] for row, panels in rows.items()}
    assert titles["Capture"][0] == "Captured documents/s"
    assert "Capture latency (source commit to journal)" in titles["Capture"]
    assert "Derivation lag (seconds)" in titles["Derivation"]
    assert "Commit to searchable" in titles["Index"]
    assert "API latency by route" in titles["API"]
    assert "Quarantined documents" in titles["Quarantine"]


def test_panels_use_the_datasource_variable_and_units() -> None:
    board = _dashboard()
    [variable] = board["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    panels = [p for p in board["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["fieldConfig"]["defaults"]["unit"] in {"s", "ops", "reqps", "Bps", "short"}
        assert panel["targets"], panel["title"]


def test_latency_panels_draw_their_targets() -> None:
    rows = _rows(_dashboard())
    targets = {
        "Capture latency (source commit to journal)": 0.1,
        "Commit to searchable": 0.1,
        "API latency by route": 0.2,
    }
    panels = {p["title"]: p for panels in rows.values() for p in panels}
    for title, seconds in targets.items():
        defaults = panels[title]["fieldConfig"]["defaults"]
        assert defaults["unit"] == "s"
        assert defaults["thresholds"]["steps"][-1] == {"color": "red", "value": seconds}
        assert defaults["custom"]["thresholdsStyle"]["mode"] == "line"
        exprs = [t["expr"] for t in panels[title]["targets"]]
        assert [e.split(",")[0] for e in exprs] == [
            "histogram_quantile(0.5",
            "histogram_quantile(0.99",
        ]


def test_queries_name_only_exported_metric_families() -> None:
    queries = _queries(_dashboard())
    used = {name for _, expr in queries for name in re.findall(r"\bsophia_[a-z_]+", expr)}
    assert used <= SERIES, f"not an exported family: {sorted(used - SERIES)}"
    # the histograms are read through their buckets, and the data path is all there
    assert {f"{h}_bucket" for h in HISTOGRAMS} <= used
    assert {"sophia_flow_documents_total", "sophia_flow_quarantined_total"} <= used
    matchers = [m for _, expr in queries for m in re.findall(r'job=~?"([^"]*)"', expr)]
    jobs = {job for matcher in matchers for job in matcher.split("|")}
    assert jobs and jobs <= JOBS, f"not a scrape job: {sorted(jobs - JOBS)}"


def _promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"an unknown Grafana variable in {expr}"
    return expr


@pytest.mark.slow
def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses a recording rule's expression as Prometheus would, so each query
    # becomes one rule.
    rules = [
        {"record": f"dashboard:{name}", "expr": _promql(expr)}
        for name, expr in _queries(_dashboard())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_dagster_stack_provisions_the_dashboard_and_the_alert_rules() -> None:
    from infra import dagster_deployment

    image = "acme/sophia-code-location:0123456789ab@sha256:" + "c" * 64
    recorder, _ = _run(
        dagster_deployment.program,
        {"codeLocationImage": image, "chartRepository": "https://charts.example.internal"},
        DAGSTER_SECRETS,
    )
    maps = recorder.of("kubernetes:core/v1:ConfigMap")
    assert set(maps) == {"sophia-grafana-dashboard", "sophia-prometheus-rules"}
    dashboard = maps["sophia-grafana-dashboard"]
    # the Grafana chart's sidecar picks up ConfigMaps with this label
    assert dashboard["metadata"]["labels"] == {"grafana_dashboard": "1"}
    # beside Prometheus and Grafana, which mount ConfigMaps of their own namespace only
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert maps["sophia-prometheus-rules"]["metadata"]["namespace"] == "monitoring"
    board = json.loads(dashboard["data"]["sophia.json"])
    assert board["uid"] == "sophia-data-path"
    assert list(_rows(board)) == DATA_PATH
    rules = maps["sophia-prometheus-rules"]
    assert rules["metadata"]["labels"] == {"prometheus_rule": "1"}
    assert rules["data"] == {"alerts.yaml": dagster_deployment.ALERT_RULES.read_text()}
    assert dagster_deployment.ALERT_RULES == PROJECT_ROOT / "deploy" / "monitoring" / "alerts.yaml"
