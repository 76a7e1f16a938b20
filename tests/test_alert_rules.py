"""The alert rules (deploy/monitoring/alerts.yaml) and the two Prometheus configurations: promtool
accepts them and their unit tests pass; every alert says what it is, what to run and how long
it waits, fires in a unit test and stays quiet in another; its thresholds are the asset checks'
and its runbook names commands this project has; and a real Prometheus loads the rules, scrapes
a target and names the Kubernetes pods' jobs as the rules expect."""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from sophia_assets.checks import cdc_latency, searchable_latency
from sophia_assets.freshness import FRESHNESS
from tests.support import metric_families as families
from tests.support.paths import REPO
from tests.support.prometheus import LoopbackPrometheus, PrometheusUnavailable, promtool

MONITORING = REPO / "deploy" / "monitoring"
ALERTS = MONITORING / "alerts.yaml"
ALERT_TESTS = MONITORING / "alerts_test.yaml"
LOCAL_CONFIG = MONITORING / "prometheus.yml"
K8S_CONFIG = MONITORING / "prometheus-k8s.yml"
CLI_REFERENCE = REPO / "docs" / "cli.md"
EXPORTED = families.EXPORTED | {"up"}  # Prometheus' own `up` of each scrape job


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _groups() for rule in group["rules"]]


def _groups() -> list[dict[str, Any]]:
    return yaml.safe_load(ALERTS.read_text())["groups"]


def _alert(name: str, severity: str) -> dict[str, Any]:
    (rule,) = [r for r in _rules() if r["alert"] == name and r["labels"]["severity"] == severity]
    return rule


def _duration_s(text: str) -> float:
    """A Prometheus duration as seconds: 90s, 5m, 1h30m."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(int(n) * units[u] for n, u in parts)


def _threshold(rule: dict[str, Any]) -> float:
    """The number an alert compares against: its expression ends in `> N`."""
    match = re.search(r">\s*([0-9.]+)\s*$", rule["expr"])
    assert match, f"{rule['alert']}: no trailing `> N` in {rule['expr']!r}"
    return float(match.group(1))


def _require(result) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def _promtool_present() -> None:
    """promtool, installed when missing; where it cannot be, the tests skip, except in CI,
    where the rules must have been checked."""
    try:
        promtool("--version")
    except PrometheusUnavailable as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI must check the alert rules with promtool: {err}")
        pytest.skip(f"no promtool: {err}")


# -- promtool -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_promtool_accepts_the_rules(_promtool_present: None) -> None:
    result = promtool("check", "rules", str(ALERTS))
    _require(result)
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


@pytest.mark.slow
def test_the_rules_unit_tests_pass(_promtool_present: None) -> None:
    result = promtool("test", "rules", str(ALERT_TESTS))
    _require(result)
    assert "SUCCESS" in result.stdout


@pytest.mark.slow
def test_promtool_accepts_the_local_config(_promtool_present: None) -> None:
    result = promtool("check", "config", str(LOCAL_CONFIG))
    _require(result)
    # rule_files resolve next to the config, so the check read our rules too
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


@pytest.mark.slow
def test_promtool_accepts_the_kubernetes_config(_promtool_present: None, tmp_path: Path) -> None:
    # Checked as written except two things only a cluster has: Debian's Prometheus is built
    # without Kubernetes discovery (`field kubernetes_sd_configs not found`), so the pods come
    # from a file with the same __meta_kubernetes_* labels instead; and the rules are read
    # from the repository rather than from the ConfigMap's mount.
    config = _kubernetes_config_for_loopback(tmp_path, pods=[])
    path = tmp_path / "prometheus-k8s.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = promtool("check", "config", str(path))
    _require(result)
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


# -- the rules as documents -----------------------------------------------------------------------


def test_every_alert_says_what_to_do_and_waits() -> None:
    rules = _rules()
    assert len(rules) >= 15
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        assert annotations["runbook"].startswith("uv run "), name
        assert "{{" in annotations["description"], f"{name}: description names no label/value"
        # at least a minute: one failed scrape or one slow batch must not page
        assert _duration_s(rule["for"]) >= 60, name
    # one name per alert and severity, so the unit tests and inhibit rules can tell them apart
    keys = [(r["alert"], r["labels"]["severity"]) for r in rules]
    assert len(keys) == len(set(keys))


def test_the_issue_s_alerts_are_all_there() -> None:
    exprs = {r["alert"]: r["expr"] for r in _rules()}
    needles = {
        "SophiaCaptureLatencyP99High": "sophia_flow_capture_latency_seconds_bucket",
        "SophiaSearchableLatencyP99High": "sophia_flow_searchable_latency_seconds_bucket",
        "SophiaFlowStale": "sophia_flow_lag_seconds",
        "SophiaFlowLagGrowing": "deriv(sophia_flow_lag_documents[15m])",
        "SophiaFlowQuarantineGrowing": "increase(sophia_flow_quarantined_total[15m]) > 0",
        "SophiaFlowServeDown": 'up{job="sophia-flow-serve"} == 0',
        "SophiaFlowTaskNotServing": "sophia_flow_task_serving == 0",
        "SophiaFlowJournalDown": "sophia_flow_journal_up == 0",
        "SophiaApiLatencyP99High": "sophia_api_request_duration_seconds_bucket",
        "SophiaApiErrorsHigh": 'status=~"5.."',
        "SophiaSearchApiDown": 'up{job="sophia-search-api"} == 0',
        "SophiaGpuJanitorTerminated": (
            "max_over_time(sophia_gpu_janitor_terminated_instances[30m]) > 0"
        ),
    }
    for name, needle in needles.items():
        assert needle in exprs.get(name, ""), f"{name} should test {needle}"
    for name in ("SophiaCaptureLatencyP99High", "SophiaSearchableLatencyP99High"):
        assert "histogram_quantile(0.99, sum by (task, le) (rate(" in exprs[name]


def test_thresholds_are_the_asset_checks() -> None:
    pairs = [
        (("SophiaCaptureLatencyP99High", "critical"), cdc_latency.FAIL_P99_MS / 1000),
        (("SophiaCaptureLatencyP99High", "warning"), cdc_latency.WARN_P99_MS / 1000),
        (("SophiaSearchableLatencyP99High", "critical"), searchable_latency.FAIL_P99_MS / 1000),
        (("SophiaSearchableLatencyP99High", "warning"), searchable_latency.WARN_P99_MS / 1000),
        (("SophiaFlowStale", "critical"), _seconds(FRESHNESS.fail_window.to_timedelta())),
        (("SophiaFlowStale", "warning"), _seconds(FRESHNESS.warn_window.to_timedelta())),
        (("SophiaApiLatencyP99High", "warning"), 0.2),  # the API's target (docs/api.md)
    ]
    for (name, severity), expected in pairs:
        assert _threshold(_alert(name, severity)) == pytest.approx(expected), (name, severity)


def _seconds(window: timedelta) -> float:
    return window.total_seconds()


def test_alerts_read_only_exported_metrics() -> None:
    for rule in _rules():
        expr = re.sub(r"\{[^}]*\}", "", rule["expr"])  # label values are not metric names
        for name in set(re.findall(r"\b(?:sophia_\w+|up)\b", expr)):
            base = next(
                (name[: -len(s)] for s in families.HISTOGRAM_SUFFIXES if name.endswith(s)), name
            )
            assert name in EXPORTED or base in EXPORTED, f"{rule['alert']}: {name} is not exported"


def test_every_alert_fires_and_stays_quiet_in_a_unit_test() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert tests["rule_files"] == [ALERTS.name]
    fired: set[tuple[str, str]] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            if not check.get("exp_alerts"):
                quiet.add(check["alertname"])
            for expected in check.get("exp_alerts") or []:
                fired.add((check["alertname"], expected["exp_labels"]["severity"]))
                assert expected["exp_annotations"]["summary"], check["alertname"]
    alerts = {(r["alert"], r["labels"]["severity"]) for r in _rules()}
    assert alerts - fired == set(), "alerts with no unit test where they fire"
    assert {name for name, _ in alerts} - quiet == set(), "alerts never tested quiet"


# -- runbooks -------------------------------------------------------------------------------------


def _runbook_commands() -> Iterator[tuple[str, list[str]]]:
    for rule in _rules():
        for command in rule["annotations"]["runbook"].split(" ; "):
            assert command.startswith("uv run "), f"{rule['alert']}: {command!r}"
            yield rule["alert"], shlex.split(command)[2:]


def test_runbooks_name_real_commands() -> None:
    checked = {"sophia": 0, "dagster": 0, "python": 0}
    for alert, argv in _runbook_commands():
        program, args = argv[0], argv[1:]
        assert program in checked, f"{alert}: `{program}` is not a command of this project"
        {"sophia": _check_sophia, "dagster": _check_dagster, "python": _check_python_module}[
            program
        ](alert, args)
        checked[program] += 1
    assert all(checked.values()), checked  # the walk saw each kind


def _check_sophia(alert: str, args: list[str]) -> None:
    """`sophia X Y ...` is a verb of docs/cli.md (generated from the parser), and each flag
    given is one of that verb's."""
    verbs = []
    for arg in args:
        if not re.fullmatch(r"[a-z][a-z-]*", arg):
            break  # a placeholder (COLLECTION), a value or a flag ends the verb
        verbs.append(arg)
    path = " ".join(["sophia", *verbs])
    heading = re.search(rf"^#+ `{re.escape(path)}(?=[ `]).*$", CLI_REFERENCE.read_text(), re.M)
    assert heading, f"{alert}: `{path}` is not in docs/cli.md"
    for flag in (a for a in args if a.startswith("--")):
        assert f"[{flag}" in heading.group(0) or f" {flag} " in heading.group(0), (
            f"{alert}: `{path}` has no {flag}"
        )


def _check_dagster(alert: str, args: list[str]) -> None:
    """A leaf of the installed `dagster` CLI that parses these arguments, on this project's
    definitions, its assets and sensors."""
    from dagster._cli import create_dagster_cli

    command: click.Command = create_dagster_cli()
    args = list(args)
    while isinstance(command, click.Group):
        name = args.pop(0)
        assert name in command.commands, f"{alert}: no `dagster ... {name}`"
        command = command.commands[name]
    params = command.make_context(command.name, args).params  # raises on an unknown option
    modules = params.get("module_name")
    if modules is not None:
        modules = (modules,) if isinstance(modules, str) else modules
        assert tuple(modules) == ("sophia_assets.definitions",), alert
    if params.get("select"):
        keys = _asset_keys()
        for key in params["select"].split(","):
            assert key in keys, f"{alert}: no asset {key}"
    if params.get("sensor_name"):
        assert params["sensor_name"] in _sensor_names(), f"{alert}: no sensor"


def _asset_keys() -> set[str]:
    from sophia_assets.definitions import defs

    return {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}


def _sensor_names() -> set[str]:
    from sensors.lambda_janitor import build_janitor_sensor
    from sophia_assets.definitions import defs

    # the janitor exists only where Lambda is configured
    return {sensor.name for sensor in defs.sensors} | {build_janitor_sensor().name}


def _check_python_module(alert: str, args: list[str]) -> None:
    assert args[0] == "-m", alert
    module = REPO / Path(*args[1].split("."))
    assert module.with_suffix(".py").exists() or (module / "__main__.py").exists(), (
        f"{alert}: no module {args[1]}"
    )


# -- the configurations ---------------------------------------------------------------------------


def test_the_local_config_scrapes_the_platform() -> None:
    config = yaml.safe_load(LOCAL_CONFIG.read_text())
    assert config["rule_files"] == [ALERTS.name]
    assert _duration_s(config["global"]["scrape_interval"]) <= 15
    assert _duration_s(config["global"]["evaluation_interval"]) <= 15
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"sophia-flow-serve", "sophia-search-api", "pushgateway"}
    targets = {name: job["static_configs"][0]["targets"] for name, job in jobs.items()}
    assert targets == {
        "sophia-flow-serve": ["127.0.0.1:9464"],
        "sophia-search-api": ["127.0.0.1:8080"],
        "pushgateway": ["127.0.0.1:9091"],
    }
    assert jobs["sophia-search-api"]["metrics_path"] == "/metrics"
    assert jobs["pushgateway"]["honor_labels"] is True  # else every pushed job= is rewritten


def test_the_kubernetes_config_discovers_pods_in_the_platform_namespace() -> None:
    config = yaml.safe_load(K8S_CONFIG.read_text())
    # where infra/dagster_deployment.py's ConfigMap key lands when mounted
    assert config["rule_files"] == ["/etc/prometheus/rules/alerts.yaml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (pods,) = [job for job in jobs.values() if "kubernetes_sd_configs" in job]
    (discovery,) = pods["kubernetes_sd_configs"]
    assert discovery["role"] == "pod"
    assert "sophia" in discovery["namespaces"]["names"]
    assert jobs["pushgateway"]["honor_labels"] is True


def _kubernetes_config_for_loopback(root: Path, pods: list[dict[str, Any]]) -> dict[str, Any]:
    """prometheus-k8s.yml with the pods from a file (`pods`: file_sd target groups carrying the
    __meta_kubernetes_* labels) and the rules from the repository; all else as written."""
    config = yaml.safe_load(K8S_CONFIG.read_text())
    pods_file = root / "pods.json"
    pods_file.write_text(json.dumps(pods))
    for job in config["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["file_sd_configs"] = [{"files": [str(pods_file)]}]
    config["rule_files"] = [str(ALERTS)]
    return config


# -- a real Prometheus ----------------------------------------------------------------------------


@contextmanager
def _metrics_server(registry: CollectorRegistry) -> Iterator[int]:
    """`registry` served on a free loopback port, as the platform's processes serve theirs."""
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _lagging_registry(task: str, seconds: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    lag = Gauge("sophia_flow_lag_seconds", "lag", ["task"], registry=registry)
    lag.labels(task).set(seconds)
    return registry


@contextmanager
def _running(prometheus: LoopbackPrometheus) -> Iterator[LoopbackPrometheus]:
    """`prometheus` started (skipped where it cannot be installed, except in CI), and stopped
    whatever the test does."""
    try:
        prometheus.start()
    except PrometheusUnavailable as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Prometheus tests: {err}")
        pytest.skip(f"no prometheus: {err}")
    try:
        yield prometheus
    finally:
        prometheus.stop()


def _evaluated_rules(prometheus: LoopbackPrometheus, timeout_s: float = 30) -> list[dict]:
    """The rule groups once every rule has been evaluated (health leaves `unknown`)."""
    result: list[dict] = []

    def evaluated(_: list[dict]) -> bool:
        nonlocal result
        result = prometheus.rules()
        return all(r["health"] != "unknown" for g in result for r in g["rules"])

    prometheus.wait_for("vector(1)", evaluated, timeout_s)
    return result


@pytest.mark.slow
def test_a_real_prometheus_loads_the_rules_and_scrapes(tmp_path: Path) -> None:
    with _metrics_server(_lagging_registry("derive:x", 5000)) as port:
        prometheus = LoopbackPrometheus(
            tmp_path / "prometheus",
            {"sophia-flow-serve": f"127.0.0.1:{port}"},
            rule_files=[ALERTS],
        )
        with _running(prometheus):
            groups = _evaluated_rules(prometheus)
            # the API lists the groups in its own order, not the file's
            assert {g["name"] for g in groups} == {g["name"] for g in _groups()}
            unhealthy = [
                (r["name"], r.get("lastError"))
                for g in groups
                for r in g["rules"]
                if r["health"] != "ok"
            ]
            assert unhealthy == []
            assert sum(len(g["rules"]) for g in groups) == len(_rules())

            scraped = prometheus.wait_for(
                'sophia_flow_lag_seconds{job="sophia-flow-serve"}', lambda r: len(r) == 1
            )
            assert scraped[0]["metric"]["task"] == "derive:x"
            assert float(scraped[0]["value"][1]) == 5000
            # 5000 s is past both freshness lines: both severities go pending (for: 5m)
            pending = prometheus.wait_for(
                'ALERTS{alertname="SophiaFlowStale"}', lambda r: len(r) == 2
            )
            assert {a["metric"]["severity"] for a in pending} == {"warning", "critical"}
            assert {a["metric"]["alertstate"] for a in pending} == {"pending"}
            assert {a["metric"]["task"] for a in pending} == {"derive:x"}


def _pod(name: str, port: int, **meta: str) -> dict[str, Any]:
    """A file_sd target group as Kubernetes pod discovery would give it: the pod's IP with a
    container port, and its labels and annotations as __meta_kubernetes_* labels."""
    labels = {
        "__meta_kubernetes_namespace": "sophia",
        "__meta_kubernetes_pod_name": name,
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
        "__meta_kubernetes_pod_annotation_prometheus_io_port": str(port),
    }
    labels.update({f"__meta_kubernetes_pod_{key}": value for key, value in meta.items()})
    return {"targets": ["127.0.0.1:1"], "labels": labels}


@pytest.mark.slow
def test_the_kubernetes_relabelling_names_the_jobs_the_rules_use(tmp_path: Path) -> None:
    with (
        _metrics_server(_lagging_registry("derive:x", 1)) as serve_port,
        _metrics_server(CollectorRegistry()) as api_port,
    ):
        pods = [
            _pod("flow-serve-0", serve_port, label_app_kubernetes_io_name="flow-serve"),
            # infra/search_api.py labels its pods `app: sophia-search-api`
            _pod(
                "search-api-0",
                api_port,
                label_app="sophia-search-api",
                annotation_prometheus_io_path="/custom/metrics",
            ),
            _pod("dagster-webserver-0", api_port, label_app_kubernetes_io_name="dagster"),
            _pod(
                "flow-serve-1",
                serve_port,
                label_app_kubernetes_io_name="flow-serve",
                annotation_prometheus_io_scrape="false",
            ),
            _pod(
                "flow-serve-2",
                serve_port,
                label_app_kubernetes_io_name="sophia-flow-serve",
                phase="Pending",
            ),
        ]
        root = tmp_path / "prometheus"
        root.mkdir()
        config = _kubernetes_config_for_loopback(root, pods)
        pods_job = [job for job in config["scrape_configs"] if "file_sd_configs" in job]
        prometheus = LoopbackPrometheus(root, {}, scrape_configs=pods_job)
        with _running(prometheus):
            up = prometheus.wait_for(
                'up{job=~"sophia-flow-serve|sophia-search-api"} == 1', lambda r: len(r) == 2
            )
            jobs = {a["metric"]["job"]: a["metric"] for a in up}
            assert set(jobs) == {"sophia-flow-serve", "sophia-search-api"}
            assert jobs["sophia-flow-serve"]["instance"] == f"127.0.0.1:{serve_port}"
            assert jobs["sophia-flow-serve"]["pod"] == "flow-serve-0"
            assert jobs["sophia-search-api"]["namespace"] == "sophia"
            targets = prometheus.targets()
            urls = {t["labels"]["pod"]: t["scrapeUrl"] for t in targets["activeTargets"]}
            assert urls == {
                "flow-serve-0": f"http://127.0.0.1:{serve_port}/metrics",
                "search-api-0": f"http://127.0.0.1:{api_port}/custom/metrics",
            }
            dropped = {
                t["discoveredLabels"]["__meta_kubernetes_pod_name"]
                for t in targets["droppedTargets"]
            }
            assert dropped == {"dagster-webserver-0", "flow-serve-1", "flow-serve-2"}
