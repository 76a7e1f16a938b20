"""The platform's Grafana dashboard as code, built with grafana-foundation-sdk: one row per stage
of the data path, left to right (capture, derivation, index, search API, quarantine), then the
processes' health. Every query names only the families docs/monitoring.md lists.

deploy/monitoring/dashboard.json is this module's output, committed so that a reviewer sees
the panels change; regenerate it with
`uv run python -m sophia_assets.metrics.dashboard > deploy/monitoring/dashboard.json`."""

from __future__ import annotations

import json

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, units
from grafana_foundation_sdk.models import dashboard as models

UID = "sophia-data-path"
TITLE = "Sophia data path"
# Grafana resolves the data source from the variable, so one JSON fits every Grafana.
DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"  # at least four scrapes, whatever the zoom

# The task label tells the stages apart: captures are named by catalog name, the derivation
# `derive:<collection>`, the index `index:<index name>`.
CAPTURES = 'task!~"derive:.*|index:.*"'
DERIVATIONS = 'task=~"derive:.*"'
INDEXES = 'task=~"index:.*"'
VECTOR_UPDATES = 'collection="sophia/vector_updates"'

CAPTURE_TARGET_S = 0.1  # source commit to journal append
SEARCHABLE_TARGET_S = 0.1  # journal append to searchable in the index
API_TARGET_S = 0.2  # search request

Panels = list[Builder[models.Panel]]


def _query(expr: str, legend: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)


def _selector(metric: str, matchers: str) -> str:
    return f"{metric}{{{matchers}}}" if matchers else metric


def _rate(metric: str, matchers: str = "", by: str = "task") -> str:
    return f"sum by ({by}) (rate({_selector(metric, matchers)}[{RATE}]))"


def _quantiles(histogram: str, matchers: str, by: str) -> list[prometheus.Dataquery]:
    """p50 and p99 of a histogram per `by` label: the median and the tail a target is about."""
    return [
        _query(
            f"histogram_quantile({q}, sum by (le, {by}) "
            f"(rate({_selector(histogram + '_bucket', matchers)}[{RATE}])))",
            f"p{round(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.99)
    ]


def _thresholds(*steps: tuple[float | None, str]) -> dashboard_builders.ThresholdsConfig:
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=value, color=color) for value, color in steps])
    )


def _series(
    title: str, unit: str, queries: list[prometheus.Dataquery], *, width: int = 8
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .span(width)
        .height(8)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    for query in queries:
        panel.with_target(query)
    return panel


def _latency(
    title: str, queries: list[prometheus.Dataquery], target_s: float, *, width: int = 8
) -> timeseries.Panel:
    """Seconds, with the target drawn as a red line so a breach is visible at a glance."""
    return (
        _series(title, units.Seconds, queries, width=width)
        .description(f"Target: p99 under {round(target_s * 1000)} ms.")
        .thresholds(_thresholds((None, "green"), (target_s, "red")))
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE)
        )
    )


def _up_stat(title: str, query: prometheus.Dataquery, *, width: int = 6) -> stat.Panel:
    """A 0/1 gauge shown as down (red) or up (green)."""
    names = {
        "0": models.ValueMappingResult(text="down", color="red", index=0),
        "1": models.ValueMappingResult(text="up", color="green", index=1),
    }
    return (
        stat.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .with_target(query.instant())
        .unit(units.Short)
        .span(width)
        .height(5)
        .mappings([models.ValueMap(options=names)])
        .thresholds(_thresholds((None, "red"), (1, "green")))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
    )


def _capture() -> Panels:
    return [
        _series(
            "Captured documents/s",
            units.OpsPerSecond,
            [_query(_rate("sophia_flow_documents_total", CAPTURES), "{{task}}")],
        ),
        _series(
            "Captured bytes/s",
            units.BytesPerSecondSI,
            [_query(_rate("sophia_flow_bytes_total", CAPTURES), "{{task}}")],
        ),
        _latency(
            "Capture latency (source commit to journal)",
            _quantiles("sophia_flow_capture_latency_seconds", CAPTURES, "task"),
            CAPTURE_TARGET_S,
        ),
    ]


def _derivation() -> Panels:
    return [
        _series(
            "Derivation lag (documents)",
            units.Short,
            [_query(f"sophia_flow_lag_documents{{{DERIVATIONS}}}", "{{task}}")],
        ),
        _series(
            "Derivation lag (seconds)",
            units.Seconds,
            [_query(f"sophia_flow_lag_seconds{{{DERIVATIONS}}}", "{{task}}")],
        ),
        _series(
            "Derived documents/s",
            units.OpsPerSecond,
            [_query(_rate("sophia_flow_documents_total", DERIVATIONS), "{{task}}")],
        ),
    ]


def _index() -> Panels:
    # The index applies sophia/vector_updates, so that journal's offset is how much it holds
    # once caught up, and the gap to the index task's own offset is what it still owes.
    return [
        _series(
            "Index size (vector_updates journal offset)",
            units.Short,
            [
                _query(f"sophia_flow_journal_offset{{{VECTOR_UPDATES}}}", "journal"),
                _query(f"sophia_flow_task_offset{{{INDEXES}}}", "applied {{task}}"),
            ],
        ),
        _series(
            "Index lag",
            units.Short,
            [
                _query(f"sophia_flow_lag_documents{{{INDEXES}}}", "documents {{task}}"),
                _query(f"sophia_flow_lag_seconds{{{INDEXES}}}", "seconds {{task}}"),
            ],
        ),
        _latency(
            "Commit to searchable",
            _quantiles("sophia_flow_searchable_latency_seconds", INDEXES, "task"),
            SEARCHABLE_TARGET_S,
        ),
    ]


def _api() -> Panels:
    return [
        _latency(
            "API latency by route",
            _quantiles("sophia_api_request_duration_seconds", "", "route"),
            API_TARGET_S,
            width=6,
        ),
        _series(
            "API requests/s by status",
            units.RequestsPerSecond,
            [_query(_rate("sophia_api_requests_total", by="status"), "{{status}}")],
            width=6,
        ),
        _series(
            "API requests in flight",
            units.Short,
            [_query("sum(sophia_api_requests_in_flight)", "in flight")],
            width=6,
        ),
        _series(
            "API rate limited/s",
            units.RequestsPerSecond,
            [_query(f"sum(rate(sophia_api_rate_limited_total[{RATE}]))", "rate limited")],
            width=6,
        ),
    ]


def _quarantine() -> Panels:
    quarantined = "sophia_flow_quarantined_total"
    return [
        _series(
            "Quarantined documents",
            units.Short,
            [_query(f"sum by (task) (increase({quarantined}[{RATE}]))", "{{task}}")],
            width=16,
        ),
        stat.Panel()
        .title("Quarantined in the time range")
        .datasource(DATASOURCE)
        .with_target(
            _query(f"sum by (task) (increase({quarantined}[$__range]))", "{{task}}").instant()
        )
        .unit(units.Short)
        .span(8)
        .height(8)
        .thresholds(_thresholds((None, "green"), (1, "red")))
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"])),
    ]


def _health() -> Panels:
    return [
        _up_stat("Tasks serving", _query("sophia_flow_task_serving", "{{task}}")),
        _up_stat("Journal up", _query("sophia_flow_journal_up", "{{instance}}")),
        _up_stat(
            "Scrape targets up",
            _query('up{job=~"sophia-flow-serve|sophia-search-api"}', "{{job}} {{instance}}"),
            width=12,
        ),
        _series(
            "Journal reconnects",
            units.Short,
            [_query(f"sum by (task) (increase(sophia_flow_reconnects_total[{RATE}]))", "{{task}}")],
            width=12,
        ),
        _series(
            "Checkpoint age",
            units.Seconds,
            [_query("time() - sophia_flow_last_checkpoint_timestamp_seconds", "{{task}}")],
            width=12,
        ),
    ]


# The rows in data-path order; the test checks this order and the metric names.
ROWS = (
    ("Capture", _capture),
    ("Derivation", _derivation),
    ("Index", _index),
    ("API", _api),
    ("Quarantine", _quarantine),
    ("Health", _health),
)


def build() -> models.Dashboard:
    board = (
        dashboard_builders.Dashboard(TITLE)
        .uid(UID)
        .tags(["sophia", "data-path"])
        .description("Capture, derivation, index, search API and quarantine, left to right.")
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            dashboard_builders.DatasourceVariable("datasource")
            .label("Prometheus")
            .type("prometheus")
        )
    )
    for title, panels in ROWS:
        board.with_row(dashboard_builders.Row(title))
        for panel in panels():
            board.with_panel(panel)
    model = board.build()
    # Stable ids and query letters, so that the generated file only changes when a panel does.
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number
        for letter, target in zip("ABCDEFGH", getattr(panel, "targets", None) or [], strict=False):
            target.ref_id = letter
    return model


def dashboard_json() -> str:
    """The dashboard as Grafana's JSON model, byte-for-byte reproducible."""
    return json.dumps(build(), cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


if __name__ == "__main__":
    print(dashboard_json(), end="")
