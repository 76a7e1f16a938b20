"""The metrics of `sophia flow serve`: which figures of each task feed which family, and the
endpoint on SOPHIA_METRICS_ADDR (docs/monitoring.md)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from sophia_assets.cli.live import LiveTask
from sophia_assets.embedding.index_sync import SyncReport
from sophia_assets.flow.capture import CaptureReport, CaptureRunner
from sophia_assets.metrics.serve import ServeMetrics, TaskFigures, WatchedTask


def start_serve_metrics(journal_url: str) -> ServeMetrics | None:
    """The serve's families, served on SOPHIA_METRICS_ADDR; None when it is `off`."""
    from prometheus_client import CollectorRegistry

    from sophia_assets.metrics.exposition import metrics_address, serve_metrics

    address = metrics_address()
    if address is None:
        return None
    registry = CollectorRegistry()
    metrics = ServeMetrics(registry, journal_url)
    bound = serve_metrics(registry, address)
    print(f"metrics on http://{bound}/metrics", file=sys.stderr, flush=True)
    return metrics


def watch_capture(metrics: ServeMetrics, runner: CaptureRunner) -> None:
    def figures() -> TaskFigures:
        report = runner.report
        return TaskFigures(
            report.documents,
            report.bytes,
            report.quarantined,
            report.batches,
            runner.reconnects,
            runner.streaming.is_set(),
        )

    writes = tuple(b.collection.name for b in runner.bindings)
    metrics.watch(WatchedTask(runner.settings.task, figures, writes=writes))


def watch_live_task(metrics: ServeMetrics, live: LiveTask) -> None:
    def figures() -> TaskFigures:
        report, task = live.report, live.task
        if isinstance(report, SyncReport):
            return TaskFigures(
                report.documents, 0, report.quarantined, report.batches, task.reconnects,
                task.serving,
            )  # fmt: skip
        written = [report.collections.get(name) for name in live.writes]
        return TaskFigures(
            report.source_documents,
            sum(f.bytes for f in written if f),
            sum(f.quarantined for f in written if f),
            report.batches,
            task.reconnects,
            task.serving,
        )

    metrics.watch(WatchedTask(live.task.task, figures, live.source, live.writes))


def capture_observer(
    metrics: ServeMetrics | None, then: Callable[[CaptureReport], None]
) -> Callable[[CaptureReport], None]:
    """The capture's on_batch: the commit's latencies into the histogram, then `then`."""

    def observed(report: CaptureReport) -> None:
        commit = report.last_commit
        if metrics is not None and commit is not None:
            metrics.captured(report.task, commit.at, commit.source_ts_ms)
        then(report)

    return observed


def task_observer(
    metrics: ServeMetrics | None, then: Callable[[str, int], None]
) -> Callable[[str, int, object], None]:
    """A live task's on_batch: an index's commit-to-searchable times, then `then`."""

    def observed(task: str, documents: int, report: object) -> None:
        if metrics is not None and isinstance(report, SyncReport):
            metrics.searchable(task, report.searchable_s)
        then(task, documents)

    return observed
