"""The capture as a Dagster asset, its latency check, the embedding-lag check on what the
capture journaled, and `sophia flow read`."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from resources.flow_runtime import FlowRuntimeResource
from resources.postgres import PostgresResource
from sophia_assets.assets.cdc import capture_asset
from sophia_assets.catalog.translator import FlowTranslator
from sophia_assets.checks.cdc_latency import latency_check
from sophia_assets.flow import journal
from tests.support.cdc import COLLECTION, catalog_copy, load, sql
from tests.support.postgres import SOURCE_URL_ENV
from tests.support.processes import run_sophia

CDC_KEY = dg.AssetKey(["sophia", "postgresql_cdc"])


def _definitions(tmp_path: Path):
    catalog = load(catalog_copy(tmp_path))
    specs = {s.key: s for s in FlowTranslator(catalog).build_specs()}
    asset = capture_asset(catalog.captures["sophia/source-postgres"], catalog, specs)
    postgres = PostgresResource(url_env=SOURCE_URL_ENV)
    resources = {"postgres": postgres, "flow_runtime": FlowRuntimeResource(postgres=postgres)}
    return asset, latency_check(CDC_KEY), resources


def test_materializing_the_collection_drains_the_capture(source: str, tmp_path: Path) -> None:
    asset, _, resources = _definitions(tmp_path)
    sql(source, "INSERT INTO documents (id, title, body) VALUES (1, 'a', 'b'), (2, 'c', 'd')")
    first = dg.materialize([asset], resources=resources)
    sql(
        source,
        "UPDATE documents SET title = 'e' WHERE id = 2",
        "DELETE FROM documents WHERE id = 1",
    )
    second = dg.materialize([asset], resources=resources)

    backfill = first.asset_materializations_for_node(asset.op.name)[0].metadata
    assert backfill["documents"].value == 2 and backfill["backfilled_rows"].value == 2
    changes = second.asset_materializations_for_node(asset.op.name)[0].metadata
    assert (changes["first_offset"].value, changes["last_offset"].value) == (2, 3)
    assert changes["latency_documents"].value == 2
    assert 0 < changes["latency_p50_ms"].value <= changes["latency_p99_ms"].value
    assert changes["commit_lsn"].value.count("/") == 1


def _journal_rows_with_latency(url: str, milliseconds: list[float]) -> None:
    """Journal rows whose source commit lies `ms` before this transaction's commit. One
    statement in an autocommit transaction, so the commit follows `now()` by well under a
    millisecond even on a loaded machine (a hundred round trips once took tens of ms)."""
    conn = __import__("psycopg2").connect(url)
    journal.ensure_schema(conn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            'INSERT INTO flow.journal (collection, "offset", key, document, commit_lsn, source_ts) '
            "SELECT %s, n - 1, jsonb_build_array(n - 1), '{}', '0/1', "
            "now() - make_interval(secs => ms / 1000) "
            "FROM unnest(%s::float8[]) WITH ORDINALITY AS t(ms, n)",
            (COLLECTION, milliseconds),
        )
    conn.close()


@pytest.mark.parametrize(
    ("latencies", "passed", "severity"),
    [
        ([1.0] * 100, True, None),
        ([1.0] * 90 + [60.0] * 10, False, dg.AssetCheckSeverity.WARN),
        ([1.0] * 90 + [400.0] * 10, False, dg.AssetCheckSeverity.ERROR),
    ],
    ids=["under-25ms", "warn-over-25ms", "fail-over-100ms"],
)
def test_latency_check(source: str, tmp_path: Path, latencies, passed, severity) -> None:
    asset, check, resources = _definitions(tmp_path)
    _journal_rows_with_latency(source, latencies)
    result = dg.materialize(
        [asset, check], resources=resources, selection=dg.AssetSelection.checks(check)
    )
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed is passed
    if severity is not None:
        assert evaluation.severity == severity
    metadata = evaluation.metadata
    assert metadata["latency_documents"].value == 100
    assert metadata["latency_p99_ms"].value >= max(latencies)
    assert {"latency_p50_ms", "latency_p95_ms", "latency_max_ms", "latency_window"} <= set(metadata)


def test_a_window_with_no_captured_change_warns(source: str, tmp_path: Path) -> None:
    asset, check, resources = _definitions(tmp_path)
    result = dg.materialize(
        [asset, check], resources=resources, selection=dg.AssetSelection.checks(check)
    )
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed is False and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["note"].value == "no captured change in the window"


@pytest.mark.parametrize(
    ("ages_s", "embedded", "passed", "severity"),
    [
        ([2000.0, 1000.0], 1, True, None),  # caught up, however old its documents are
        ([10.0, 5.0], -1, True, None),  # a young backlog: a run is on its way
        ([400.0, 5.0], -1, False, dg.AssetCheckSeverity.WARN),
        ([2000.0, 400.0, 5.0], 0, False, dg.AssetCheckSeverity.WARN),  # the oldest unembedded
        ([1000.0, 5.0], -1, False, dg.AssetCheckSeverity.ERROR),
    ],
    ids=["caught-up", "young", "warn-over-5min", "warn-after-checkpoint", "fail-over-15min"],
)
def test_embedding_lag_check(
    source: str, tmp_path: Path, ages_s, embedded: int, passed: bool, severity
) -> None:
    from sophia_assets.checks.embedding_lag import embedding_lag_check
    from sophia_assets.flow.tasks import derivation_task

    asset, _, resources = _definitions(tmp_path)
    conn = __import__("psycopg2").connect(source)
    journal.ensure_schema(conn)
    conn.close()
    sql(
        source,
        'INSERT INTO flow.journal (collection, "offset", key, document, commit_lsn, captured_at) '
        "SELECT %s, n - 1, jsonb_build_array(n - 1), '{}', '0/1', "
        "now() - make_interval(secs => age) FROM unnest(%s::float8[]) WITH ORDINALITY AS t(age, n)",
        params=(COLLECTION, ages_s),
    )
    if embedded >= 0:
        sql(
            source,
            "INSERT INTO flow.checkpoints (task, lsn, state) VALUES (%s, '0/0', %s)",
            params=(derivation_task("sophia/vector_updates"), json.dumps({"offset": embedded})),
        )
    updates = dg.AssetSpec(["sophia", "vector_updates"], deps=[CDC_KEY])
    check = embedding_lag_check(updates.key, COLLECTION)
    result = dg.materialize(
        [asset, updates, check], resources=resources, selection=dg.AssetSelection.checks(check)
    )
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed is passed
    if severity is not None:
        assert evaluation.severity == severity
    behind = len(ages_s) - 1 - embedded
    assert evaluation.metadata["embedding_lag_documents"].value == behind
    oldest = ages_s[embedded + 1] if behind else 0.0
    assert evaluation.metadata["embedding_lag_seconds"].value == pytest.approx(oldest, abs=30)


def test_flow_read_prints_journal_and_reduced_view(source: str, tmp_path: Path) -> None:
    asset, _, resources = _definitions(tmp_path)
    sql(source, "INSERT INTO documents (id, title, body) VALUES (1, 'a', 'b'), (2, 'c', 'd')")
    dg.materialize([asset], resources=resources)
    sql(source, "DELETE FROM documents WHERE id = 1")
    dg.materialize([asset], resources=resources)
    env = {"SOPHIA_POSTGRES_URL": source}

    journal_lines = run_sophia("flow", "read", COLLECTION, env=env).stdout.splitlines()
    assert [json.loads(line)["_meta"]["op"] for line in journal_lines] == ["c", "c", "d"]
    since = run_sophia("flow", "read", COLLECTION, "--since", "2", env=env).stdout
    assert [json.loads(line)["id"] for line in since.splitlines()] == [1]
    reduced = run_sophia("flow", "read", COLLECTION, "--reduced", env=env).stdout
    assert [json.loads(line)["id"] for line in reduced.splitlines()] == [2]
