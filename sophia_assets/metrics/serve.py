"""The metrics of `sophia flow serve`, one `task` label per task of the catalog (each capture,
`derive:<collection>`, `index:<name>`), so the label set is as small as the catalog.

Counts are read at scrape time from the figures the tasks keep anyway (a report per task),
and positions from the journal database in one short transaction, so the data path pays
nothing for them; only the two latency histograms are observed as batches commit."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import psycopg2
import psycopg2.errors
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("sophia.metrics")

# From a millisecond (a capture on loopback) to a minute (a backlog on a CPU), with the
# 100 ms SLA and the 1 s failure line on bucket edges, so histogram_quantile is exact there.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
SCRAPE_TIMEOUT_MS = 2000
# A connect or a dead connection must not hang a scrape either (the server's statement
# timeout cannot see those): give up within seconds and report the journal down.
CONNECT_TIMEOUT_S = 2
TCP_USER_TIMEOUT_MS = 3000


@dataclass(frozen=True)
class TaskFigures:
    """What one task has done since the process started."""

    documents: int  # read (derivation, index) or journaled (capture)
    bytes: int  # journal text written (captures, derivations)
    quarantined: int
    batches: int
    reconnects: int
    serving: bool  # streaming from its slot (capture) or holding its lease (task)


@dataclass(frozen=True)
class WatchedTask:
    task: str
    figures: Callable[[], TaskFigures]
    source: str | None = None  # the collection it reads (derivation, index), for its lag
    writes: tuple[str, ...] = ()  # the collections it journals into


class ServeMetrics:
    """The families of one serve process, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry, journal_url: str):
        self.capture_latency = Histogram(
            "sophia_flow_capture_latency_seconds",
            "Source commit to journal commit, per captured change (not backfilled rows).",
            ["task"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.searchable_latency = Histogram(
            "sophia_flow_searchable_latency_seconds",
            "Source commit to the index acknowledging the vectors, per changed document.",
            ["task"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.tasks: list[WatchedTask] = []
        registry.register(_TaskCollector(self.tasks))
        registry.register(_PositionCollector(journal_url, self.tasks))

    def watch(self, task: WatchedTask) -> None:
        """Scrapes read `task`'s figures from now on, instead of any earlier task's of that
        name (one series per task)."""
        self.tasks[:] = [t for t in self.tasks if t.task != task.task] + [task]

    def captured(self, task: str, committed_at: float, source_ts_ms: Iterable[int]) -> None:
        """A capture's batch committed at `committed_at` (epoch seconds)."""
        child = self.capture_latency.labels(task)
        for ts_ms in source_ts_ms:
            child.observe(max(0.0, committed_at - ts_ms / 1000))

    def searchable(self, task: str, seconds: Iterable[float]) -> None:
        child = self.searchable_latency.labels(task)
        for value in seconds:
            child.observe(max(0.0, value))


class _TaskCollector(Collector):
    def __init__(self, tasks: list[WatchedTask]):
        self.tasks = tasks

    def collect(self) -> Iterator[Metric]:
        families = {
            "documents": CounterMetricFamily(
                "sophia_flow_documents", "Documents the task has processed.", labels=["task"]
            ),
            "bytes": CounterMetricFamily(
                "sophia_flow_bytes", "Bytes of journal text the task has written.", labels=["task"]
            ),
            "quarantined": CounterMetricFamily(
                "sophia_flow_quarantined", "Documents the task has quarantined.", labels=["task"]
            ),
            "batches": CounterMetricFamily(
                "sophia_flow_batches", "Batches the task has committed.", labels=["task"]
            ),
            "reconnects": CounterMetricFamily(
                "sophia_flow_reconnects", "Times the task reconnected to Postgres.", labels=["task"]
            ),
        }
        serving = GaugeMetricFamily(
            "sophia_flow_task_serving",
            "1 while the task streams (capture) or holds its lease (derivation, index).",
            labels=["task"],
        )
        for watched in self.tasks:
            figures = watched.figures()
            for name, family in families.items():
                family.add_metric([watched.task], getattr(figures, name))
            serving.add_metric([watched.task], 1.0 if figures.serving else 0.0)
        yield from families.values()
        yield serving


class _PositionCollector(Collector):
    """Journal heads, checkpoints and lags, read when Prometheus scrapes: one connection,
    kept, with a statement timeout so a stuck database cannot hang the scrape."""

    def __init__(self, journal_url: str, tasks: list[WatchedTask]):
        self.journal_url = journal_url
        self.tasks = tasks
        self._conn = None
        # Scrapes run on threads of their own (two Prometheus replicas, a curl beside
        # one); they take turns on the one connection.
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "sophia_flow_journal_up", "1 when the last scrape could read the journal database."
        )
        with self._lock:
            try:
                families = self._read()
            except psycopg2.errors.UndefinedTable:  # serve has not made the journals yet
                families = []
            except psycopg2.Error as err:
                # The kind only: an error's text may quote the connection string.
                log.warning(
                    "metrics: cannot read the journal database (%s)",
                    err.pgcode or type(err).__name__,
                )
                self._close()
                families = None
        up.add_metric([], 0.0 if families is None else 1.0)
        yield up
        yield from families or []

    def _read(self) -> list[Metric]:
        head = GaugeMetricFamily(
            "sophia_flow_journal_offset", "The last offset of each collection's journal.",
            labels=["collection"],
        )  # fmt: skip
        position = GaugeMetricFamily(
            "sophia_flow_task_offset",
            "The last source offset the task has processed.",
            labels=["task"],
        )
        lag = GaugeMetricFamily(
            "sophia_flow_lag_documents",
            "Source documents the task has yet to process.",
            labels=["task"],
        )
        lag_s = GaugeMetricFamily(
            "sophia_flow_lag_seconds",
            "Age of the oldest source document the task has yet to process (0: caught up).",
            labels=["task"],
        )
        checkpointed = GaugeMetricFamily(
            "sophia_flow_last_checkpoint_timestamp_seconds",
            "When the task last committed its checkpoint (Unix time).",
            labels=["task"],
        )
        conn = self._connection()
        with conn, conn.cursor() as cur:
            collections = sorted(
                {c for t in self.tasks for c in (*t.writes, t.source) if c is not None}
            )
            heads = {c: _head(cur, c) for c in collections}
            for collection, offset in heads.items():
                head.add_metric([collection], offset)
            cur.execute(
                "SELECT task, (state->>'offset')::bigint, extract(epoch FROM updated_at) "
                "FROM flow.checkpoints WHERE task = ANY(%s)",
                ([t.task for t in self.tasks],),
            )
            checkpoints = {task: (offset, at) for task, offset, at in cur.fetchall()}
            for watched in self.tasks:
                offset, at = checkpoints.get(watched.task, (None, None))
                if at is not None:
                    checkpointed.add_metric([watched.task], float(at))
                if watched.source is None:
                    continue
                done = -1 if offset is None else offset
                behind = max(0, heads[watched.source] - done)
                position.add_metric([watched.task], done)
                lag.add_metric([watched.task], behind)
                lag_s.add_metric([watched.task], _age(cur, watched.source, done + 1, behind))
        return [head, position, lag, lag_s, checkpointed]

    def _connection(self):
        if self._conn is None or self._conn.closed:
            self._conn = psycopg2.connect(
                self.journal_url,
                options=f"-c statement_timeout={SCRAPE_TIMEOUT_MS}",
                connect_timeout=CONNECT_TIMEOUT_S,
                tcp_user_timeout=TCP_USER_TIMEOUT_MS,
                keepalives_idle=10,
                keepalives_interval=2,
                keepalives_count=2,
            )
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
        self._conn = None


def _head(cur, collection: str) -> int:
    """Offsets are dense from 0, so the head minus a checkpoint is the lag in documents."""
    cur.execute('SELECT max("offset") FROM flow.journal WHERE collection = %s', (collection,))
    offset = cur.fetchone()[0]
    return -1 if offset is None else offset


def _age(cur, collection: str, offset: int, behind: int) -> float:
    if not behind:
        return 0.0
    cur.execute(
        "SELECT extract(epoch FROM now() - captured_at) FROM flow.journal "
        'WHERE collection = %s AND "offset" = %s',
        (collection, offset),
    )
    row = cur.fetchone()
    return max(0.0, float(row[0])) if row else 0.0
