"""The Estuary sensor on a real journal: cursors, thresholds, max wait, one run in flight,
GPU routing, and a restart from a stored cursor."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from resources.postgres import PostgresResource
from sensors.estuary import Thresholds, build_estuary_sensor
from tests.support.cdc import (
    DOCUMENTS_DDL,
    catalog_copy,
    drop_database,
    load,
    new_database,
    runner,
    sql,
)
from tests.support.postgres import SOURCE_URL_ENV

pytestmark = pytest.mark.slow


CDC_KEY = dg.AssetKey(["sophia", "postgresql_cdc"])
UPDATES_KEY = dg.AssetKey(["sophia", "vector_updates"])
EMBED_JOB = dg.define_asset_job("embed", selection=[UPDATES_KEY])


@pytest.fixture
def capture(source: str, tmp_path: Path):
    catalog = load(catalog_copy(tmp_path))
    return lambda: runner(source, catalog).drain()


def _insert(url: str, first: int, count: int) -> None:
    sql(
        url,
        "INSERT INTO documents (id, title, body) SELECT g, 't', 'b' FROM generate_series(%s, %s) g",
        params=(first, first + count - 1),
    )


def _materializations(result) -> list[dg.AssetMaterialization]:
    return [e for e in result.asset_events if isinstance(e, dg.AssetMaterialization)]


def _checks(result) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    """The tick's check evaluations by (asset, check)."""
    return {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.asset_events
        if isinstance(e, dg.AssetCheckEvaluation)
    }


def _tick(sensor, instance, cursor=None):
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"postgres": PostgresResource(url_env=SOURCE_URL_ENV)},
    )
    result = sensor.evaluate_tick(context)
    return result, result.cursor


def test_reports_progress_and_requests_runs_by_batch_size(source, capture) -> None:
    sensor = build_estuary_sensor(
        CDC_KEY,
        UPDATES_KEY,
        EMBED_JOB,
        Thresholds(batch_documents=5, max_wait_seconds=3600, gpu_documents=1000),
    )
    with dg.instance_for_test() as instance:
        _insert(source, 1, 3)
        capture()
        first, cursor = _tick(sensor, instance)
        (event,) = _materializations(first)
        assert event.asset_key == CDC_KEY and event.metadata["offset"].value == 2
        assert event.metadata["documents_since_last_tick"].value == 3
        assert event.metadata["embedding_lag_documents"].value == 3
        assert "latency_p99_ms" not in event.metadata  # backfilled rows are not changes
        assert first.run_requests == [] and json.loads(cursor) == {"reported": 2}
        # The checks are evaluated where their figures are reported: no change captured in
        # the window warns (no figure is not a pass); 3 documents just captured is no lag.
        checks = _checks(first)
        latency = checks[("sophia/postgresql_cdc", "capture_latency_p99")]
        assert latency.passed is False and latency.severity == dg.AssetCheckSeverity.WARN
        assert latency.metadata["note"].value == "no captured change in the window"
        lag = checks[("sophia/vector_updates", "embedding_lag")]
        assert lag.passed is True and lag.metadata["embedding_lag_documents"].value == 3

        quiet, cursor = _tick(sensor, instance, cursor)
        assert quiet.asset_events == [] and quiet.run_requests == []
        assert "3 documents pending, below 5" in quiet.skip_message

        _insert(source, 4, 3)
        capture()
        third, cursor = _tick(sensor, instance, cursor)
        assert third.asset_events[0].metadata["documents_since_last_tick"].value == 3
        assert third.asset_events[0].metadata["latency_p99_ms"].value > 0
        latency = _checks(third)[("sophia/postgresql_cdc", "capture_latency_p99")]
        assert latency.metadata["latency_documents"].value == 3  # the 3 changes, now a figure
        (request,) = third.run_requests
        assert request.run_key.endswith(":0-5") and request.tags["sophia/runner"] == "local"
        assert request.asset_selection == [UPDATES_KEY]  # its own derivation, nothing else

        # A daemon restarted with the stored cursor neither re-reports nor loses the request.
        again, _ = _tick(sensor, instance, cursor)
        assert again.asset_events == []
        assert [r.run_key for r in again.run_requests] == [request.run_key]


def test_a_first_tick_does_not_report_what_a_run_already_recorded(source, capture) -> None:
    sensor = build_estuary_sensor(CDC_KEY, UPDATES_KEY, EMBED_JOB, Thresholds(batch_documents=99))
    with dg.instance_for_test() as instance:
        _insert(source, 1, 3)
        capture()
        # As the `main` run's capture step records it: the journal's last offset, 2.
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=CDC_KEY, metadata={"last_offset": 2})
        )
        first, cursor = _tick(sensor, instance)
        assert first.asset_events == [] and json.loads(cursor) == {"reported": 2}

        _insert(source, 4, 1)
        capture()
        grown, _ = _tick(sensor, instance, cursor)
        assert [e.metadata["offset"].value for e in _materializations(grown)] == [3]


def test_a_reset_journal_is_reported_from_its_start(source, capture) -> None:
    sensor = build_estuary_sensor(CDC_KEY, UPDATES_KEY, EMBED_JOB, Thresholds(batch_documents=99))
    with dg.instance_for_test() as instance:
        # A materialization from another database under the same instance, far ahead.
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=CDC_KEY, metadata={"last_offset": 500})
        )
        _insert(source, 1, 3)
        capture()
        first, cursor = _tick(sensor, instance)
        assert [e.metadata["offset"].value for e in _materializations(first)] == [2]
        assert first.asset_events[0].metadata["documents_since_last_tick"].value == 3


def test_a_new_database_gets_new_run_keys(
    source, capture, postgres_url, tmp_path, monkeypatch
) -> None:
    """A fresh database (or SOPHIA_HOME) under the same Dagster instance starts its offsets
    at 0 again; its runs must not share keys with the ones the old journal already used,
    which Dagster would skip as done."""
    sensor = build_estuary_sensor(CDC_KEY, UPDATES_KEY, EMBED_JOB, Thresholds(batch_documents=1))
    with dg.instance_for_test() as instance:
        _insert(source, 1, 1)
        capture()
        (first,) = _tick(sensor, instance)[0].run_requests
        other = new_database(postgres_url)
        try:
            sql(other, DOCUMENTS_DDL)
            _insert(other, 1, 1)
            runner(other, load(catalog_copy(tmp_path / "other", slot="other_slot"))).drain()
            monkeypatch.setenv(SOURCE_URL_ENV, other)
            (second,) = _tick(sensor, instance)[0].run_requests
        finally:
            drop_database(other)
    assert first.run_key.endswith(":0-0") and second.run_key.endswith(":0-0")
    assert first.run_key != second.run_key


def test_one_run_in_flight_and_gpu_routing(source, capture) -> None:
    sensor = build_estuary_sensor(
        CDC_KEY, UPDATES_KEY, EMBED_JOB, Thresholds(batch_documents=2, gpu_documents=4)
    )
    with dg.instance_for_test() as instance:
        _insert(source, 1, 5)
        capture()
        result, cursor = _tick(sensor, instance)
        (request,) = result.run_requests
        assert request.tags["sophia/runner"] == "gpu"

        instance.add_run(
            dg.DagsterRun(job_name="embed", run_id="a" * 36, status=dg.DagsterRunStatus.STARTED)
        )
        busy, _ = _tick(sensor, instance, cursor)
        assert busy.run_requests == []
        assert "an embedding run is in flight" in busy.skip_message


def test_max_wait_starts_a_small_batch(source, capture) -> None:
    patient = build_estuary_sensor(
        CDC_KEY, UPDATES_KEY, EMBED_JOB, Thresholds(batch_documents=100, max_wait_seconds=3600)
    )
    impatient = build_estuary_sensor(
        CDC_KEY, UPDATES_KEY, EMBED_JOB, Thresholds(batch_documents=100, max_wait_seconds=0)
    )
    with dg.instance_for_test() as instance:
        _insert(source, 1, 1)
        capture()
        assert _tick(patient, instance)[0].run_requests == []
        (request,) = _tick(impatient, instance)[0].run_requests
        assert request.run_key.startswith("embed:") and request.run_key.endswith(":0-0")


def test_index_follows_vector_updates_without_running_when_nothing_changed() -> None:
    from sophia_assets.definitions import defs

    index_key = dg.AssetKey(["pinecone", "sophia-ai-vectors"])
    with dg.instance_for_test() as instance:
        quiet = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert quiet.total_requested == 0
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=UPDATES_KEY))
        moved = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=quiet.cursor)
        assert moved.get_requested_partitions(index_key) == {None}
        assert moved.total_requested == 1
        # serve maintains both: the sensor reports the index after its updates, so no run
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=UPDATES_KEY))
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=index_key))
        served = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=moved.cursor
        )
        assert served.total_requested == 0


def test_a_failed_run_is_retried_with_backoff_not_on_every_offset(source, capture) -> None:
    clock = {"now": 0.0}
    sensor = build_estuary_sensor(
        CDC_KEY, UPDATES_KEY, EMBED_JOB, Thresholds(batch_documents=1), now=lambda: clock["now"]
    )
    with dg.instance_for_test() as instance:
        _insert(source, 1, 3)
        capture()
        result, cursor = _tick(sensor, instance)
        (first,) = result.run_requests
        failed = dg.DagsterRun(
            job_name="embed", run_id="f" * 36, status=dg.DagsterRunStatus.STARTED, tags=first.tags
        )
        instance.add_run(failed)
        instance.report_run_failed(failed)
        ended = instance.get_run_record_by_id(failed.run_id).end_time
        assert ended is not None

        clock["now"] = ended + 10
        waiting, cursor = _tick(sensor, instance, cursor)
        assert waiting.run_requests == []
        assert f"run {failed.run_id} failed (1 in a row); retrying in 20 s" in (
            waiting.skip_message or ""
        )
        _insert(source, 4, 2)  # new documents arrive: still no request before the backoff
        capture()
        clock["now"] = ended + 20
        assert _tick(sensor, instance, cursor)[0].run_requests == []
        clock["now"] = ended + 31
        (retry,) = _tick(sensor, instance, cursor)[0].run_requests
        assert retry.run_key.endswith(":0-4:retry1") and retry.tags["sophia/retry_of"] == "f" * 36


def test_while_serve_holds_the_lease_it_reports_runless_and_requests_no_run(
    source, capture
) -> None:
    import psycopg2

    from sophia_assets.flow import journal, leases
    from sophia_assets.flow.tasks import derivation_task, index_task

    index_key = dg.AssetKey(["pinecone", "sophia-ai-vectors"])
    sensor = build_estuary_sensor(
        CDC_KEY,
        UPDATES_KEY,
        EMBED_JOB,
        Thresholds(batch_documents=1, max_wait_seconds=0),
        indexes={index_key: "sophia-ai-vectors"},
    )
    _insert(source, 1, 5)
    capture()
    serve = psycopg2.connect(source)  # what `sophia flow serve` holds while it runs
    held = [
        leases.try_acquire(serve, task, "serve:test", leases.SERVE, 60)
        for task in (derivation_task("sophia/vector_updates"), index_task("sophia-ai-vectors"))
    ]
    assert all(held)
    with dg.instance_for_test() as instance:
        result, cursor = _tick(sensor, instance)
        assert result.run_requests == []  # 5 pending, but serve embeds them
        with serve, serve.cursor() as cur:  # serve embedded offsets 0..2, indexed 0..1
            journal.save_checkpoint(
                cur, derivation_task("sophia/vector_updates"), "0/0", {"offset": 2}
            )
            journal.save_checkpoint(cur, index_task("sophia-ai-vectors"), "0/0", {"offset": 1})
            cur.execute(
                "INSERT INTO flow.searchable (index, source_key, source_ts) "
                "SELECT 'sophia-ai-vectors', g::text, now() - interval '20 milliseconds' "
                "FROM generate_series(1, 3) g"
            )
        result, cursor = _tick(sensor, instance, cursor)
        reported = {e.asset_key: e.metadata for e in _materializations(result)}
        assert reported[UPDATES_KEY]["source_offset"].value == 2
        assert reported[UPDATES_KEY]["embedding_lag_documents"].value == 2
        assert reported[index_key]["applied_offset"].value == 1
        assert reported[index_key]["searchable_documents"].value == 3
        checks = _checks(result)
        assert checks[("pinecone/sophia-ai-vectors", "searchable_latency_p99")].passed is True
        assert set(checks) == {
            ("pinecone/sophia-ai-vectors", "searchable_latency_p99"),
            ("sophia/vector_updates", "embedding_lag"),
        }
        assert result.run_requests == []

        result, cursor = _tick(sensor, instance, cursor)  # nothing moved: nothing reported
        assert result.asset_events == [] and result.run_requests == []

        for lease in held:  # serve stops: the batch path takes over
            leases.release(serve, lease)
        result, cursor = _tick(sensor, instance, cursor)
        (request,) = result.run_requests
        assert request.asset_selection == [UPDATES_KEY]
    serve.close()
