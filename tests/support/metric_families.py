"""The metric families the platform exports (docs/monitoring.md), one list for every test
that holds the alerts, the dashboard and the scrape of serve to them: a query or an alert on
a name nobody exports would never show or fire."""

COUNTERS = frozenset({
    "sophia_flow_documents_total",
    "sophia_flow_bytes_total",
    "sophia_flow_quarantined_total",
    "sophia_flow_batches_total",
    "sophia_flow_reconnects_total",
    "sophia_api_requests_total",
    "sophia_api_rate_limited_total",
})  # fmt: skip
GAUGES = frozenset({
    "sophia_flow_task_serving",
    "sophia_flow_journal_up",
    "sophia_flow_journal_offset",
    "sophia_flow_task_offset",
    "sophia_flow_lag_documents",
    "sophia_flow_lag_seconds",
    "sophia_flow_last_checkpoint_timestamp_seconds",
    "sophia_api_requests_in_flight",
    "sophia_run_last_success_timestamp_seconds",
    "sophia_run_documents",
    "sophia_run_documents_per_second",
    "sophia_run_lag_documents",
    "sophia_gpu_janitor_instances",
    "sophia_gpu_janitor_terminated_instances",
    "sophia_gpu_janitor_last_tick_timestamp_seconds",
})  # fmt: skip
HISTOGRAMS = frozenset({
    "sophia_flow_capture_latency_seconds",
    "sophia_flow_searchable_latency_seconds",
    "sophia_api_request_duration_seconds",
})  # fmt: skip
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Base names (a histogram by its own name), and every series name a query may use.
EXPORTED = COUNTERS | GAUGES | HISTOGRAMS
SERIES = COUNTERS | GAUGES | {f"{h}{s}" for h in HISTOGRAMS for s in HISTOGRAM_SUFFIXES}
