"""The Estuary sensor: watches a captured collection's progress and turns it into Dagster
events and embedding runs.

Each tick it reads, from the collection's journal (the local flow runtime's; see the README
for production), how far the collection has grown since the last tick, and
- reports a runless `AssetMaterialization` of the collection with the offset, documents since
  the last tick, the embedding lag and capture latency (the freshness policy reads it);
- requests an embedding run once the documents pending for the derivation reach a batch
  size, or the oldest of them has waited long enough; one run in flight at a time, the run
  key naming the offset range, tagged for the GPU runner when the batch is large. After a
  failed run it waits (30 s, doubling to 15 minutes) before it asks again, with a run key
  naming the retry, instead of asking on every new offset.

While `sophia flow serve` holds the derivation's lease (it embeds continuously), the sensor
requests no embedding run below the GPU threshold; it reports runless materializations of the
derived collection and of each index serve maintains (their offsets and lags), and with each
index report the `searchable_latency_p99` check's evaluation over the window, so lineage,
freshness and the check stay true with no run. When serve stops, the lease lapses and the
batch path (runs) takes over again.

The cursor is the last offset reported, so a restarted daemon neither re-reports nor misses.
Without a cursor (a new sensor), the last offset the collection's latest materialization
recorded stands in for it, so a collection a run has just captured is not reported as new
(which would mark the embeddings stale); a journal shorter than that was reset, and counts
from the start.
"""

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from resources.postgres import PostgresResource
from sophia_assets.checks import cdc_latency, embedding_lag
from sophia_assets.checks.searchable_latency import CHECK_NAME, verdict
from sophia_assets.embedding.lag import EmbeddingLag
from sophia_assets.embedding.live_progress import LiveProgress, read_live_progress
from sophia_assets.flow.latency import LatencyFigures, latency_figures
from sophia_assets.flow.tasks import derivation_task
from sophia_assets.run_status import IN_FLIGHT

DERIVATION_TAG = "sophia/derivation"
RETRY_FIRST_S = 30.0
RETRY_MAX_S = 900.0
FINISHED = [
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
]


@dataclass(frozen=True)
class Thresholds:
    batch_documents: int = 500  # pending documents that start a run at once
    max_wait_seconds: float = 30.0  # the oldest pending document never waits longer
    gpu_documents: int = 20_000  # at or above this, the run is tagged for the GPU runner

    @classmethod
    def from_environment(cls) -> "Thresholds":
        """SOPHIA_EMBED_BATCH_DOCUMENTS, SOPHIA_EMBED_MAX_WAIT_S, SOPHIA_EMBED_GPU_DOCUMENTS."""
        return cls(
            batch_documents=int(os.environ.get("SOPHIA_EMBED_BATCH_DOCUMENTS", 500)),
            max_wait_seconds=float(os.environ.get("SOPHIA_EMBED_MAX_WAIT_S", 30)),
            gpu_documents=int(os.environ.get("SOPHIA_EMBED_GPU_DOCUMENTS", 20_000)),
        )


@dataclass(frozen=True)
class Progress:
    last_offset: int
    derived_offset: int
    oldest_pending_age_s: float | None
    new_documents: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    journal: str = ""  # which journal: a new database or a reset journal gets a new one
    window: LatencyFigures | None = None  # capture latency over the window, when it grew

    @property
    def embedding_lag(self) -> EmbeddingLag:
        behind = max(self.last_offset - self.derived_offset, 0)
        return EmbeddingLag(behind, self.oldest_pending_age_s if behind else None)


def read_progress(
    postgres: PostgresResource,
    collection: str,
    derivation: str,
    reported: int,
    window_minutes: float = 15.0,
) -> Progress:
    conn = postgres.connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('flow.journal') IS NOT NULL")
            if not cur.fetchone()[0]:
                return Progress(-1, -1, None, 0, None, None)
            cur.execute(
                "SELECT (state->>'offset')::bigint FROM flow.checkpoints WHERE task = %s",
                (derivation_task(derivation),),
            )
            row = cur.fetchone()
            derived = row[0] if row else -1
            cur.execute(
                'SELECT coalesce(max("offset"), -1), '
                'extract(epoch FROM now() - min(captured_at) FILTER (WHERE "offset" > %s)), '
                'count(*) FILTER (WHERE "offset" > %s) '
                'FROM flow.journal WHERE collection = %s AND "offset" > least(%s, %s)',
                (derived, reported, collection, derived, reported),
            )
            last, age, new = cur.fetchone()
            journal = _journal_identity(cur, collection)
            grown = last > reported  # only then is the collection reported, with its check
            latency = (
                latency_figures(cur, collection, offsets=(reported + 1, last)) if grown else None
            )
            window = (
                latency_figures(cur, collection, window_minutes=window_minutes) if grown else None
            )
    finally:
        conn.close()
    return Progress(
        last if last >= 0 else max(reported, derived),
        derived,
        float(age) if age is not None else None,
        new,
        latency.p50_ms if latency else None,
        latency.p99_ms if latency else None,
        journal,
        window,
    )


def build_estuary_sensor(
    collection_key: dg.AssetKey,
    derivation_key: dg.AssetKey,
    embed_job,  # the asset job the sensor starts
    thresholds: Thresholds | None = None,
    minimum_interval_seconds: int = 5,
    name: str | None = None,
    now: Callable[[], float] = time.time,
    indexes: dict[dg.AssetKey, str] | None = None,
    window_minutes: float = 15.0,
) -> dg.SensorDefinition:
    """One sensor per embedding derivation: it watches the derivation's source collection and
    requests runs of that derivation only (the job may hold several). `indexes` (asset key ->
    index name) are the indexes fed by the derivation, reported while serve maintains them."""
    collection = "/".join(collection_key.path)
    derivation = "/".join(derivation_key.path)
    thresholds = thresholds or Thresholds.from_environment()
    indexes = indexes or {}

    @dg.sensor(
        name=name or "estuary__" + "__".join(collection_key.path),
        description=f"Reports progress of {collection} and requests runs of {derivation}.",
        job=embed_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
        if context.cursor:
            cursor = json.loads(context.cursor)
        else:  # a new sensor or daemon: what the collection's materializations already say
            cursor = {"reported": _recorded_offset(context, collection_key)}
        progress = read_progress(
            postgres, collection, derivation, cursor["reported"], window_minutes
        )
        if progress.last_offset < cursor["reported"]:  # the journal was reset: start over
            cursor = {"reported": -1}
            progress = read_progress(postgres, collection, derivation, -1, window_minutes)
        events = []
        if progress.last_offset > cursor["reported"]:
            metadata = {
                "offset": progress.last_offset,
                "documents_since_last_tick": progress.new_documents,
                "embedding_lag_documents": progress.last_offset - progress.derived_offset,
            }
            if progress.latency_p99_ms is not None:
                metadata["latency_p50_ms"] = round(progress.latency_p50_ms, 3)
                metadata["latency_p99_ms"] = round(progress.latency_p99_ms, 3)
            events.append(
                dg.AssetMaterialization(
                    asset_key=collection_key,
                    metadata=metadata,
                    description="reported by the Estuary sensor",
                )
            )
            events.append(_latency_evaluation(collection_key, progress.window, window_minutes))
            cursor["reported"] = progress.last_offset
        live = read_live_progress(
            postgres.connect, derivation, list(indexes.values()), window_minutes
        )
        events += _live_events(live, progress, cursor, derivation_key, indexes, window_minutes)
        if events:  # the figures moved: the embedding lag is evaluated where it is reported
            events.append(_lag_evaluation(derivation_key, progress.embedding_lag))
        request, reason = _embedding_request(
            context, progress, thresholds, embed_job.name, derivation_key, live.serving
        )
        if request is not None:
            request, reason = _after_failures(context, request, embed_job.name, cursor, now())
        if reason and events:  # a tick with events has no skip message to carry it
            context.log.info(reason)
        return dg.SensorResult(
            run_requests=[request] if request else [],
            skip_reason=None if request or events else reason,
            asset_events=events,
            cursor=json.dumps(cursor),
        )

    return _sensor


def _latency_evaluation(
    collection_key: dg.AssetKey, figures: LatencyFigures, window_minutes: float
) -> dg.AssetCheckEvaluation:
    """`capture_latency_p99` over the window, with the collection's runless report."""
    passed, severity, metadata = cdc_latency.verdict(figures, window_minutes)
    return _evaluation(collection_key, cdc_latency.CHECK_NAME, passed, severity, metadata)


def _lag_evaluation(derivation_key: dg.AssetKey, lag: EmbeddingLag) -> dg.AssetCheckEvaluation:
    passed, severity, metadata = embedding_lag.verdict(lag)
    return _evaluation(derivation_key, embedding_lag.CHECK_NAME, passed, severity, metadata)


def _evaluation(key, check_name, passed, severity, metadata) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=check_name,
        passed=passed,
        severity=severity or dg.AssetCheckSeverity.ERROR,  # read only when it failed
        metadata=metadata,
    )


def _journal_identity(cur, collection: str) -> str:
    """A short digest of the database and of when the collection's journal began (its offset
    0): run keys carry it, so a fresh database or SOPHIA_HOME under the same Dagster instance
    does not reuse the run keys of offsets another journal already embedded."""
    cur.execute(
        "SELECT (SELECT oid FROM pg_database WHERE datname = current_database())::text, "
        '(SELECT captured_at::text FROM flow.journal WHERE collection = %s AND "offset" = 0)',
        (collection,),
    )
    database, began = cur.fetchone()
    return hashlib.sha256(f"{database}:{began}".encode()).hexdigest()[:8]


def _recorded_offset(context: dg.SensorEvaluationContext, collection_key: dg.AssetKey) -> int:
    """The journal offset the collection's latest materialization recorded (a run's
    `last_offset`, or this sensor's `offset`), so that a caught-up collection is not reported
    as new again; -1 when none did."""
    event = context.instance.get_latest_materialization_event(collection_key)
    materialization = event.asset_materialization if event else None
    if materialization is None:
        return -1
    for name in ("last_offset", "offset"):
        value = materialization.metadata.get(name)
        if value is not None and isinstance(value.value, int):
            return value.value
    return -1


def _live_events(
    live: LiveProgress,
    progress: Progress,
    cursor: dict,
    derivation_key: dg.AssetKey,
    indexes: dict[dg.AssetKey, str],
    window_minutes: float,
) -> list:
    """Runless materializations of what `sophia flow serve` maintains and has moved since the
    last report (the cursor keeps each offset reported), with the index's SLA check."""
    events: list = []
    derived_moved = live.serving and live.derived_offset > cursor.get("derived", -1)
    if derived_moved:
        events.append(
            dg.AssetMaterialization(
                asset_key=derivation_key,
                metadata={
                    "source_offset": live.derived_offset,
                    "embedding_lag_documents": max(progress.last_offset - live.derived_offset, 0),
                    "last_offset": live.updates_offset,
                },
                description="maintained by `sophia flow serve`",
            )
        )
        cursor["derived"] = live.derived_offset
    applied_reported = dict(cursor.get("applied", {}))
    for key, name in indexes.items():
        applied = live.applied.get(name, -1)
        # Reported with the derived collection even when it did not move (a change whose
        # text did not change embeds nothing): declarative automation would otherwise see
        # the index behind its updates and start a run of it for nothing.
        moved = applied > applied_reported.get(name, -1)
        if name not in live.serving_indexes or not (moved or derived_moved):
            continue
        figures = live.searchable[name]
        events.append(
            dg.AssetMaterialization(
                asset_key=key,
                metadata={
                    "applied_offset": applied,
                    "lag_documents": max(live.updates_offset - applied, 0),
                    **figures.as_metadata(),
                },
                description="maintained by `sophia flow serve`",
            )
        )
        passed, severity, metadata = verdict(figures, window_minutes)
        events.append(_evaluation(key, CHECK_NAME, passed, severity, metadata))
        applied_reported[name] = applied
        cursor["applied"] = applied_reported
    return events


def _embedding_request(
    context: dg.SensorEvaluationContext,
    progress: Progress,
    thresholds: Thresholds,
    job_name: str,
    derivation_key: dg.AssetKey,
    served: bool = False,
):
    pending = progress.last_offset - progress.derived_offset
    if pending <= 0:
        return None, "nothing pending for the embeddings"
    if served and pending < thresholds.gpu_documents:
        return None, (
            f"{pending} documents pending; `sophia flow serve` embeds them continuously (a "
            f"backlog of {thresholds.gpu_documents} or more goes to a GPU run)"
        )
    old_enough = (progress.oldest_pending_age_s or 0) >= thresholds.max_wait_seconds
    if pending < thresholds.batch_documents and not old_enough:
        return None, (
            f"{pending} documents pending, below {thresholds.batch_documents}; the "
            f"oldest has waited {progress.oldest_pending_age_s or 0:.1f} s of "
            f"{thresholds.max_wait_seconds:.0f}"
        )
    running = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=job_name, statuses=list(IN_FLIGHT)), limit=1
    )
    if running:
        return None, f"an embedding run is in flight ({running[0].run_id}); one at a time"
    runner = "gpu" if pending >= thresholds.gpu_documents else "local"
    derivation = "/".join(derivation_key.path)
    return dg.RunRequest(
        run_key=f"embed:{progress.journal}:{progress.derived_offset + 1}-{progress.last_offset}",
        asset_selection=[derivation_key],
        tags={
            "sophia/runner": runner,
            "sophia/pending_documents": str(pending),
            DERIVATION_TAG: derivation,
        },
    ), None


def _after_failures(
    context: dg.SensorEvaluationContext, request: dg.RunRequest, job_name: str, cursor, now
):
    """The request as it may go now, or (None, why it waits): after a failed run of this
    derivation, the next waits out a backoff, and its run key names the retry (the same
    offsets would otherwise repeat a key Dagster already used, and never run again)."""
    derivation = request.tags[DERIVATION_TAG]
    [last] = context.instance.get_run_records(
        filters=dg.RunsFilter(
            job_name=job_name, statuses=FINISHED, tags={DERIVATION_TAG: derivation}
        ),
        limit=1,
    ) or [None]
    if last is None or last.dagster_run.status != dg.DagsterRunStatus.FAILURE:
        cursor.pop("failures", None)
        cursor.pop("failed_run", None)
        return request, None
    if cursor.get("failed_run") != last.dagster_run.run_id:
        cursor["failures"] = cursor.get("failures", 0) + 1
        cursor["failed_run"] = last.dagster_run.run_id
    failures = cursor["failures"]
    delay = min(RETRY_FIRST_S * 2 ** (failures - 1), RETRY_MAX_S)
    ended = last.end_time or last.update_timestamp.timestamp()
    if now - ended < delay:
        return None, (
            f"the last embedding run {last.dagster_run.run_id} failed ({failures} in a row); "
            f"retrying in {delay - (now - ended):.0f} s"
        )
    retry = dg.RunRequest(
        run_key=f"{request.run_key}:retry{failures}",
        asset_selection=request.asset_selection,
        tags={**request.tags, "sophia/retry_of": last.dagster_run.run_id},
    )
    return retry, None
