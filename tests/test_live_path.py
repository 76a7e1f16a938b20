"""The live path: `sophia flow serve` runs the capture, the embedding derivation and the
pgvector materialization continuously, so a committed row becomes searchable with no run; a
Dagster run of the derivation or the index takes the task over (its lease) and serve resumes
after it, with nothing doubled or lost."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import pytest

from sophia_assets.demo.corpus import load_corpus
from sophia_assets.demo.seed import DOCUMENTS_DDL
from tests.support.cdc import catalog_copy, drop_database, flow_process, new_database, sql
from tests.support.processes import stop_and_show

INDEX = 'vectors."sophia-ai-vectors"'
DERIVE = "derive:sophia/vector_updates"
TIMEOUT_S = 120


@pytest.fixture
def database(postgres_url: str) -> Iterator[str]:
    url = new_database(postgres_url)
    sql(url, DOCUMENTS_DDL)
    yield url
    drop_database(url)


@pytest.fixture
def serve(database: str, tmp_path: Path) -> Iterator[subprocess.Popen]:
    """Full `sophia flow serve` on the scratch database; micro-batches of at most 4 documents
    so that a run can take over in the middle of a backlog."""
    specs = catalog_copy(tmp_path, slot=f"live_{tmp_path.name[-12:].lower()}")
    process = flow_process(database, specs, "serve", env={"SOPHIA_LIVE_BATCH_DOCUMENTS": "4"})
    yield process
    stop_and_show(process)


def _until(condition: Callable[[], bool], process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert process.poll() is None, f"serve died while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        threading.Event().wait(0.01)


def _ids(url: str) -> set[str]:
    try:
        return {row[0] for row in sql(url, f"SELECT id FROM {INDEX}")}
    except psycopg2.Error:
        return set()  # serve has not created the index yet


def _insert_backlog(url: str, corpus, ids: range) -> None:
    """Rows `ids` (demo documents cut to one chunk) in one transaction."""
    rows = [(n, corpus[n].title, corpus[n].body[:300]) for n in ids]
    values = ", ".join(["(%s, %s, %s)"] * len(rows))
    sql(
        url,
        f"INSERT INTO documents (id, title, body) VALUES {values}",
        params=tuple(v for row in rows for v in row),
    )


def _doubled(url: str) -> list[tuple]:
    """Vector documents journaled more than once (none: every chunk embedded once)."""
    return sql(
        url,
        "SELECT key->>0, count(*) FROM flow.journal WHERE collection = 'sophia/vector_updates' "
        "GROUP BY 1 HAVING count(*) > 1",
    )


def _captured(url: str) -> int:
    try:
        return sql(
            url, "SELECT count(*) FROM flow.reduced WHERE collection = 'sophia/postgresql_cdc'"
        )[0][0]
    except psycopg2.Error:
        return 0  # serve has not created the journal yet


def _titles(url: str) -> dict[str, str]:
    return {i: t for i, t in sql(url, f"SELECT id, metadata->>'title' FROM {INDEX}")}


def test_changes_become_searchable_with_no_run(database: str, serve, shared_home: Path) -> None:
    corpus = load_corpus(shared_home / "cache")
    sql(
        database,
        "INSERT INTO documents (id, title, body) VALUES (1, 'Lighthouse keeping', "
        "'How a keeper trims the lamp wick.'), (2, %s, %s)",
        params=(corpus[0].title, corpus[0].body),
    )
    _until(lambda: {"1:0", "2:0"} <= _ids(database), serve, "the first rows")

    sql(database, "UPDATE documents SET title = 'Lamp rooms' WHERE id = 1")
    _until(lambda: _titles(database).get("1:0") == "Lamp rooms", serve, "the update")
    sql(database, "DELETE FROM documents WHERE id = 2")
    _until(lambda: not any(i.startswith("2:") for i in _ids(database)), serve, "the delete")

    # The index materialization recorded each change's commit-to-searchable time.
    [(count, worst)] = sql(
        database,
        "SELECT count(*), max(searchable_at - source_ts) FROM flow.searchable "
        "WHERE index = 'sophia-ai-vectors'",
    )
    # the update and the delete at least (the inserts may have raced serve's backfill, and
    # backfilled rows are not changes)
    assert count >= 2 and worst.total_seconds() < TIMEOUT_S
    # Each task holds its own lease, as serve.
    held = dict(sql(database, "SELECT task, kind FROM flow.leases WHERE owner IS NOT NULL"))
    assert held == {"derive:sophia/vector_updates": "serve", "index:sophia-ai-vectors": "serve"}


def test_runs_take_the_tasks_over_and_serve_resumes_after(
    database: str, serve, shared_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from resources.embedder import EmbedderResource
    from resources.postgres import PostgresResource
    from resources.vector_index import PgVectorResource
    from sophia_assets.catalog import load_catalog
    from sophia_assets.embedding.derivation import VectorUpdates
    from sophia_assets.embedding.index_sync import sync_index
    from tests.support.paths import REPO

    corpus = load_corpus(shared_home / "cache")
    embedder = EmbedderResource().load()  # loaded now: the run asks for the lease at once
    sql(database, "INSERT INTO documents (id, title, body) VALUES (0, 'First', 'row')")
    _until(lambda: "0:0" in _ids(database), serve, "serve to take both tasks")
    _insert_backlog(database, corpus, range(1, 41))
    _until(
        lambda: _captured(database) >= 41,
        serve,
        "the capture of the backlog",
    )
    catalog = load_catalog(REPO / "flow_specs")
    run = VectorUpdates(catalog, "sophia/vector_updates", database, lambda: embedder).run()
    assert run.embedded_documents > 0  # the run, not serve, embedded part of the backlog
    monkeypatch.setenv("SOPHIA_POSTGRES_URL", database)
    index = PgVectorResource(postgres=PostgresResource()).open()
    sync_index(index, database)

    sql(database, "INSERT INTO documents (id, title, body) VALUES (99, 'After', 'the run')")
    _until(lambda: "99:0" in _ids(database), serve, "serve to resume after the runs")
    # Every document embedded exactly once, by one writer or the other: no gap, no double.
    assert _doubled(database) == []
    expected = {f"{n}:0" for n in range(41)} | {"99:0"}
    assert expected <= _ids(database)
    epochs = dict(sql(database, "SELECT task, epoch FROM flow.leases"))
    # serve, then the run, then serve again: each a new epoch.
    assert epochs["derive:sophia/vector_updates"] >= 3
    assert epochs["index:sophia-ai-vectors"] >= 3


def test_a_gpu_tagged_run_takes_over_from_a_hung_serve_and_serve_resumes(
    database: str, tmp_path: Path, shared_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Dagster run tagged for the GPU runner (here the local one: the Pipes entrypoint in a
    subprocess, torch on the CPU) embeds a backlog while serve holds the derivation but has
    stopped answering (SIGSTOP): the lease expires, the run takes it and embeds the whole
    backlog, and serve, woken, takes the task back once the run lets go."""
    import dagster as dg

    from resources.embedder import EmbedderResource
    from resources.gpu_runner import LocalGpuRunner
    from resources.postgres import PostgresResource
    from sophia_assets.assets.embeddings import vector_updates_asset
    from sophia_assets.catalog.translator import FlowTranslator
    from tests.support.cdc import load

    ttl = {"SOPHIA_LEASE_TTL_S": "3"}
    for name, value in ttl.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SOPHIA_POSTGRES_URL", database)
    specs = catalog_copy(tmp_path, slot=f"gpu_{tmp_path.name[-12:].lower()}")
    capture = flow_process(database, specs, "serve", "--captures-only")
    tasks = flow_process(database, specs, "serve", env=ttl)  # its capture waits on the other
    try:
        sql(database, "INSERT INTO documents (id, title, body) VALUES (0, 'First', 'row')")
        _until(lambda: "0:0" in _ids(database), tasks, "serve to take the tasks")
        tasks.send_signal(signal.SIGSTOP)  # hung: holds its lease, renews nothing
        corpus = load_corpus(shared_home / "cache")
        _insert_backlog(database, corpus, range(1, 41))
        _until(lambda: _captured(database) >= 41, capture, "the capture of the backlog")

        catalog = load(specs)
        updates = dg.AssetKey(["sophia", "vector_updates"])
        spec = {s.key: s for s in FlowTranslator(catalog).build_specs()}[updates]
        embedder = EmbedderResource()
        asset = vector_updates_asset(catalog, spec, embedder.card().version)
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                [asset],
                instance=instance,
                tags={"sophia/runner": "gpu"},
                resources={
                    "postgres": PostgresResource(),
                    "embedder": embedder,
                    "gpu_runner": LocalGpuRunner(),
                },
            )
        [materialization] = result.asset_materializations_for_node(asset.node_def.name)
        assert materialization.metadata["embedded_documents"].value == 40  # the whole backlog

        tasks.send_signal(signal.SIGCONT)
        sql(database, "INSERT INTO documents (id, title, body) VALUES (99, 'After', 'the run')")
        _until(lambda: "99:0" in _ids(database), tasks, "serve to resume after the run")
        assert _doubled(database) == []  # no chunk embedded twice
        assert {f"{n}:0" for n in range(41)} | {"99:0"} <= _ids(database)  # nor missed
        [(epoch, kind)] = sql(
            database, "SELECT epoch, kind FROM flow.leases WHERE task = %s", params=(DERIVE,)
        )
        assert epoch >= 3 and kind == "serve"  # serve, the run, serve again
    finally:
        tasks.send_signal(signal.SIGCONT)
        for process in (tasks, capture):
            stop_and_show(process)


@pytest.mark.parametrize(
    ("latencies", "passed", "severity"),
    [
        ([20.0] * 100, True, None),
        ([20.0] * 90 + [300.0] * 10, False, "WARN"),
        ([20.0] * 90 + [3000.0] * 10, False, "ERROR"),
        ([], False, "WARN"),
    ],
    ids=["under-100ms", "warn-over-100ms", "fail-over-1s", "no-changes-warns"],
)
def test_searchable_latency_check(
    database: str, monkeypatch: pytest.MonkeyPatch, latencies, passed, severity
) -> None:
    import dagster as dg

    from resources.flow_runtime import FlowRuntimeResource
    from resources.postgres import PostgresResource
    from resources.vector_index import PgVectorResource
    from sophia_assets.assets.embeddings import vector_index_asset
    from sophia_assets.checks.searchable_latency import searchable_latency_check
    from sophia_assets.flow import journal

    monkeypatch.setenv("SOPHIA_POSTGRES_URL", database)
    conn = psycopg2.connect(database)
    journal.ensure_schema(conn)
    conn.close()
    sql(
        database,
        "INSERT INTO flow.searchable (index, source_key, source_ts) "
        "SELECT 'sophia-ai-vectors', n::text, now() - make_interval(secs => ms / 1000) "
        "FROM unnest(%s::float8[]) WITH ORDINALITY AS t(ms, n)",
        params=(latencies,),
    )
    key = dg.AssetKey(["pinecone", "sophia-ai-vectors"])
    index = vector_index_asset(dg.AssetSpec(key), "sophia/vector_updates", "sophia-ai-vectors")
    check = searchable_latency_check(key, "sophia-ai-vectors")
    postgres = PostgresResource()
    resources = {
        "postgres": postgres,
        "flow_runtime": FlowRuntimeResource(postgres=postgres),
        "vector_index": PgVectorResource(postgres=postgres),
    }
    result = dg.materialize(
        [index, check], resources=resources, selection=dg.AssetSelection.checks(check)
    )
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed is passed
    if severity is not None:
        assert evaluation.severity == getattr(dg.AssetCheckSeverity, severity)
    metadata = evaluation.metadata
    assert metadata["searchable_documents"].value == len(latencies)
    if latencies:
        assert metadata["searchable_p99_ms"].value >= max(latencies)
        assert {"searchable_p50_ms", "searchable_p95_ms", "searchable_max_ms"} <= set(metadata)
    else:
        assert "no change" in metadata["note"].value


def test_serve_killed_at_random_moments_loses_and_doubles_nothing(
    database: str, tmp_path: Path, shared_home: Path
) -> None:
    """kill -9 of serve while it embeds and indexes a backlog, three times at random moments,
    then a clean run to the end: every row has exactly one vector document per chunk in the
    journal, and the index holds exactly the reduced view's vectors."""
    import random
    import signal

    corpus = load_corpus(shared_home / "cache")
    _insert_backlog(database, corpus, range(1, 31))
    specs = catalog_copy(tmp_path, slot=f"kill_{tmp_path.name[-12:].lower()}")
    env = {"SOPHIA_LIVE_BATCH_DOCUMENTS": "3"}
    chance = random.Random()
    for _ in range(3):
        process = flow_process(database, specs, "serve", env=env)
        before = len(_ids(database))
        _until(lambda b=before: len(_ids(database)) > b, process, "some progress")
        threading.Event().wait(chance.uniform(0, 0.5))  # a random moment, not a timing
        process.send_signal(signal.SIGKILL)
        process.wait()
    process = flow_process(database, specs, "serve", env=env)
    try:
        expected = {f"{n}:0" for n in range(1, 31)}
        _until(lambda: expected <= _ids(database), process, "the whole backlog")
        assert _doubled(database) == []
        reduced = {
            row[0]
            for row in sql(
                database,
                "SELECT key->>0 FROM flow.reduced WHERE collection = 'sophia/vector_updates'",
            )
        }
        assert _ids(database) == reduced
    finally:
        process.terminate()
        process.communicate(timeout=60)
