"""The real model, the vector_updates derivation and the pgvector index, end to end on a
real embedded Postgres."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from resources.postgres import PostgresResource
from resources.vector_index import PgVectorResource
from sophia_assets.embedding.derivation import VectorUpdates
from sophia_assets.embedding.embedder import Embedder, ModelCard, default_model_path
from sophia_assets.embedding.index_sync import sync_index
from sophia_assets.embedding.search import Search
from sophia_assets.vectors import VectorIndex
from tests.support.cdc import catalog_copy, load, runner, sql
from tests.support.postgres import SOURCE_URL_ENV

pytestmark = pytest.mark.slow


UPDATES = "sophia/vector_updates"


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder(ModelCard.read(default_model_path()), device="cpu")


@pytest.fixture
def catalog(tmp_path: Path):
    return load(catalog_copy(tmp_path))


def _index() -> VectorIndex:
    return PgVectorResource(postgres=PostgresResource(url_env=SOURCE_URL_ENV)).open()


def _pipeline(url: str, catalog, embedder: Embedder, batch: int = 256):
    runner(url, catalog).drain()
    report = VectorUpdates(catalog, UPDATES, url, lambda: embedder, batch).run()
    sync_index(_index(), url)
    return report


def _expected_ids(url: str, embedder: Embedder) -> set[str]:
    """What the source implies: one vector per chunk of each live document."""
    ids = set()
    for key, title, body in sql(url, "SELECT id, title, body FROM documents"):
        text = "\n\n".join(t for t in (title, body) if t)
        ids.update(f"{key}:{n}" for n in range(len(embedder.chunks(text))))
    return ids


def test_model_places_a_paraphrase_nearer_than_an_unrelated_sentence(embedder) -> None:
    vectors = np.array(
        embedder.embed(
            [
                "How do I reset my password?",
                "What are the steps to change my login password?",
                "The train to Lyon leaves at noon.",
            ]
        )
    )
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.6 > 0.2 > similarity[0, 2]


def test_long_text_is_split_into_overlapping_slices(embedder) -> None:
    text = " ".join(f"sentence number {i} talks about item {i}." for i in range(200))
    chunks = embedder.chunks(text)
    assert len(chunks) >= 4
    assert all(chunk in text for chunk in chunks)
    assert all(
        len(embedder.tokenizer(c, add_special_tokens=False)["input_ids"]) <= 254 for c in chunks
    )
    assert chunks[0][-40:] in chunks[1]  # consecutive chunks overlap
    assert embedder.chunks("short text") == ["short text"]


def test_a_huge_title_is_not_copied_into_every_chunks_vector(
    source: str, catalog, embedder
) -> None:
    title = " ".join(f"heading{i}" for i in range(4_000))  # ~40 kB, dozens of chunks
    sql(source, "INSERT INTO documents (id, title, body) VALUES (1, %s, 'short')", params=(title,))
    _pipeline(source, catalog, embedder)
    rows = sql(
        source,
        "SELECT length(document::text), document -> 'metadata' ->> 'title' FROM flow.journal "
        "WHERE collection = %s",
        params=(UPDATES,),
    )
    chunks = len(embedder.chunks(f"{title}\n\nshort"))
    assert len(rows) == chunks > 20
    assert all(
        len(t) <= 1_000 and t.endswith(" [cut]") and title.startswith(t[:-6]) for _, t in rows
    )
    # each vector document is the vector and bounded metadata, whatever the title's length
    assert max(size for size, _ in rows) < 12_000


def test_index_follows_every_kind_of_change(source: str, catalog, embedder) -> None:
    long_body = " ".join(f"Paragraph {i} explains step {i} of the procedure." for i in range(150))
    sql(
        source,
        "INSERT INTO documents (id, title, body) VALUES "
        "(1, 'Cats', 'Cats are small domesticated felines.'), "
        "(2, 'Rivers', 'Rivers carry water to the sea.'), (3, 'Manual', %s)",
        params=(long_body,),
    )
    first = _pipeline(source, catalog, embedder)
    assert first.embedded_documents == 3 and len(embedder.chunks("Manual\n\n" + long_body)) > 2
    assert _index().ids() == _expected_ids(source, embedder)

    sql(source, "UPDATE documents SET updated_at = now() WHERE id = 1")  # content unchanged
    sql(source, "UPDATE documents SET title = 'Big rivers' WHERE id = 2")
    sql(source, "UPDATE documents SET body = 'Now short.' WHERE id = 3")  # fewer chunks
    sql(source, "INSERT INTO documents (id, title, body) VALUES (4, 'Bread', 'Bake at 220C.')")
    second = _pipeline(source, catalog, embedder)
    assert (second.unchanged_documents, second.embedded_documents) == (1, 3)
    assert second.tombstones == len(embedder.chunks("Manual\n\n" + long_body)) - 1
    assert _index().ids() == _expected_ids(source, embedder)
    title = _index().fetch(["2:0"])["2:0"].metadata["title"]
    assert title == "Big rivers"

    sql(source, "DELETE FROM documents WHERE id IN (1, 3)")
    third = _pipeline(source, catalog, embedder)
    assert third.tombstones == 2
    assert _index().ids() == _expected_ids(source, embedder) == {"2:0", "4:0"}


def test_search_finds_a_document_from_its_content(
    source: str, catalog, embedder, shared_home: Path
) -> None:
    from sophia_assets.demo.corpus import load_corpus
    from sophia_assets.demo.seed import seed_documents

    sql(source, "DROP TABLE documents")
    seed_documents(source, load_corpus(shared_home / "cache"), rows=150)
    _pipeline(source, catalog, embedder)
    (title, body) = sql(source, "SELECT title, body FROM documents WHERE id = 42")[0]
    query = body.split("\n\n")[0].replace("\n", " ")[:200]

    search = Search(embedder, _index())
    try:
        results = search(query, top_k=3)
    finally:
        search.close()
    assert results[0].id == 42 and results[0].title == title
    assert results[0].score > results[1].score


KILLABLE_RUN = textwrap.dedent("""
    import sys
    from sophia_assets.catalog import load_catalog
    from sophia_assets.embedding.derivation import VectorUpdates
    from sophia_assets.embedding.embedder import Embedder, ModelCard, default_model_path
    catalog = load_catalog(sys.argv[2])
    VectorUpdates(catalog, "sophia/vector_updates", sys.argv[1],
                  lambda: Embedder(ModelCard.read(default_model_path()), device="cpu"),
                  batch_documents=8).run()
""")


def test_killed_run_resumes_with_nothing_missing_or_doubled(
    source: str, catalog, embedder, tmp_path: Path
) -> None:
    sql(
        source,
        "INSERT INTO documents (id, title, body) SELECT g, 'Title ' || g, "
        "'Body text number ' || g || ' about topic ' || (g % 7) "
        "FROM generate_series(1, 200) g",
    )
    runner(source, catalog).drain()
    process = subprocess.Popen(
        [sys.executable, "-c", KILLABLE_RUN, source, str(tmp_path / "flow_specs")],
        env=dict(os.environ),
        stderr=subprocess.PIPE,
    )
    try:
        committed = 0
        while committed < 16 and process.poll() is None:  # at least two batches committed
            rows = (
                sql(
                    source,
                    "SELECT state->>'offset' FROM flow.checkpoints WHERE "
                    "task = 'derive:sophia/vector_updates'",
                )
                if sql(source, "SELECT to_regclass('flow.checkpoints')")[0][0]
                else []
            )
            committed = int(rows[0][0]) + 1 if rows else 0
        assert process.poll() is None, process.stderr.read()
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        process.kill()
    assert committed < 200

    VectorUpdates(catalog, UPDATES, source, lambda: embedder, 8).run()
    sync_index(_index(), source)
    assert _index().ids() == _expected_ids(source, embedder)
    doubled = sql(
        source,
        "SELECT key, count(*) FROM flow.journal WHERE collection = %s "
        "GROUP BY key HAVING count(*) > 1",
        params=(UPDATES,),
    )
    assert doubled == []


def test_checks_pass_on_a_synced_index_and_fail_on_drift(source: str, catalog, embedder) -> None:
    import dagster as dg

    from resources.embedder import EmbedderResource
    from sophia_assets.checks.embeddings import (
        consistency_check,
        coverage_check,
        dimension_check,
    )

    updates_key = dg.AssetKey(["sophia", "vector_updates"])
    index_key = dg.AssetKey(["pinecone", "sophia-ai-vectors"])
    checks = [
        coverage_check(catalog, updates_key),
        consistency_check(index_key, UPDATES, "sophia-ai-vectors"),
        dimension_check(index_key, UPDATES, "sophia-ai-vectors"),
    ]
    postgres = PostgresResource(url_env=SOURCE_URL_ENV)
    resources = {
        "postgres": postgres,
        "embedder": EmbedderResource(),
        "vector_index": PgVectorResource(postgres=postgres),
    }

    def evaluate() -> dict:
        result = dg.materialize(
            [*(dg.AssetSpec(k) for k in (updates_key, index_key)), *checks],
            resources=resources,
            selection=dg.AssetSelection.checks(*checks),
        )
        return {e.check_name: e for e in result.get_asset_check_evaluations()}

    sql(source, "INSERT INTO documents (id, title, body) VALUES (1, 'a', 'one'), (2, 'b', 'two')")
    _pipeline(source, catalog, embedder)
    assert all(e.passed for e in evaluate().values())

    sql(source, "UPDATE documents SET body = 'changed, not yet embedded' WHERE id = 1")
    runner(source, catalog).drain()
    sql(
        source,
        "INSERT INTO vectors.\"sophia-ai-vectors\" SELECT '99:0', embedding, metadata "
        'FROM vectors."sophia-ai-vectors" LIMIT 1',
    )
    drifted = evaluate()
    assert not drifted["embedding_coverage"].passed
    assert drifted["embedding_coverage"].metadata["stale_content"].value == 1
    assert not drifted["index_consistency"].passed
    assert drifted["index_consistency"].metadata["orphan_sample"].value == "99:0"
    assert drifted["vector_dimension"].passed
