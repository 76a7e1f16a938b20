"""The Pinecone backend: the real `pinecone` SDK against a loopback server that follows the
published data-plane contract, with throttling, server errors and batches over the limits."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import pytest

from resources.postgres import PostgresResource
from resources.vector_index import PineconeResource
from sophia_assets.vectors import VectorIndex, VectorRecord
from tests.support.contract_servers.pinecone import MAX_REQUEST_BYTES, PineconeContractServer

NAMESPACE = "sophia"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[PineconeContractServer]:
    monkeypatch.setenv("SOPHIA_PINECONE_API_KEY", "test-key-not-a-secret")
    with PineconeContractServer(dimension=8) as running:
        yield running
    assert running.violations == [], running.violations


@pytest.fixture
def index(
    server: PineconeContractServer, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> VectorIndex:
    monkeypatch.setenv("PINECONE_TEST_URL", postgres_url)
    return PineconeResource(
        postgres=PostgresResource(url_env="PINECONE_TEST_URL"),
        host=server.host,
        namespace=NAMESPACE,
        index_name="contract-test",
        retries=4,
    ).open()


def _records(count: int, metadata_bytes: int = 20, seed: int = 1) -> list[VectorRecord]:
    rng = random.Random(seed)
    return [
        VectorRecord(
            f"{i}:0",
            [rng.uniform(-1, 1) for _ in range(8)],
            {"title": f"doc {i}", "note": "x" * metadata_bytes, "source_key": i},
        )
        for i in range(count)
    ]


def test_batches_stay_within_limits_and_retries_recover(index, server) -> None:
    records = _records(2_500)
    server.fail_on_call[("/vectors/upsert", 1)] = 429  # throttled at once
    server.fail_on_call[("/vectors/upsert", 3)] = 500  # a server error mid-way
    index.apply(records, [], offset=41)

    assert set(server.namespaces[NAMESPACE]) == {r.id for r in records}
    upserts = [status for path, status in server.requests if path == "/vectors/upsert"]
    assert upserts.count(429) == 1 and upserts.count(500) == 1 and 400 not in upserts
    assert upserts.count(200) == 3  # 2,500 records in batches of at most 1,000
    assert index.applied_offset() == 41


def test_large_metadata_splits_batches_under_two_megabytes(index, server) -> None:
    records = _records(300, metadata_bytes=20_000)  # 300 x 20 kB: 6 MB in all
    index.apply(records, [], offset=7)
    upserts = [status for path, status in server.requests if path == "/vectors/upsert"]
    assert len(upserts) >= 3 and set(upserts) == {200}
    assert len(server.namespaces[NAMESPACE]) == 300
    assert MAX_REQUEST_BYTES == 2 * 1024 * 1024


def test_metadata_over_40_kb_is_cut_with_a_marker_not_refused(index, server) -> None:
    huge = VectorRecord(
        "9:0",
        [0.5] * 8,
        {"title": "é" * 600_000, "note": 'say "hi"\n' * 9_000, "source_key": 1, "chunk": 0},
    )
    index.apply([huge, *_records(3)], [], offset=9)  # one batch, nothing refused
    upserts = [status for path, status in server.requests if path == "/vectors/upsert"]
    assert upserts == [200]
    stored = index.fetch(["9:0", "2:0"])["9:0"].metadata
    assert len(json.dumps(stored, ensure_ascii=False).encode()) <= 40 * 1024
    assert stored["metadata_cut"] is True and stored["title"].endswith(" [cut]")
    assert stored["title"].startswith("é" * 1000)
    assert (stored["source_key"], stored["chunk"]) == (1, 0)  # short fields kept whole
    assert index.applied_offset() == 9


def test_deletes_query_fetch_list_and_stats(index, server) -> None:
    records = _records(1_200)
    index.apply(records, [], offset=1)
    index.apply([], [f"{i}:0" for i in range(0, 1_200, 2)], offset=2)  # 600 deletes

    assert index.stats().vectors == 600
    assert index.ids() == {f"{i}:0" for i in range(1, 1_200, 2)}
    target = records[7]
    (best, *_) = index.query(target.values, top_k=3)
    assert best.id == "7:0" and best.score == pytest.approx(1.0)
    assert best.metadata["title"] == "doc 7"
    filtered = index.query(target.values, top_k=3, metadata_filter={"title": {"$eq": "doc 9"}})
    assert [m.id for m in filtered] == ["9:0"]
    fetched = index.fetch(["7:0", "8:0"])
    assert set(fetched) == {"7:0"} and fetched["7:0"].values == pytest.approx(target.values)


def test_a_persistent_error_is_raised_not_dropped(index, server) -> None:
    # One retry of ours, not the fixture's four: each of our attempts is already the SDK's own
    # four with its backoff (~3 s; its data-plane REST retries cannot be switched off), and
    # whether the error comes out after our last retry does not depend on how many there are.
    index.retries = 1
    for _ in range(500):  # more than the SDK's and our retries together
        server.faults.append(("/vectors/upsert", 503))
    with pytest.raises(Exception, match="503|Service Unavailable|injected"):
        index.apply(_records(10), [], offset=5)
    assert index.applied_offset() != 5  # the offset moves only after an acknowledged batch
    assert NAMESPACE not in server.namespaces or not server.namespaces[NAMESPACE]


def test_missing_api_key_says_what_to_set(server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOPHIA_PINECONE_API_KEY")
    resource = PineconeResource(postgres=PostgresResource(), host=server.host)
    with pytest.raises(RuntimeError, match="SOPHIA_PINECONE_API_KEY is not set"):
        resource.open()


def test_index_sync_applies_the_journal_to_pinecone(
    server, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from sophia_assets.embedding.index_sync import sync_index
    from sophia_assets.flow import journal
    from tests.support.cdc import drop_database, new_database, sql

    url = new_database(postgres_url)
    try:
        monkeypatch.setenv("PINECONE_SYNC_URL", url)
        conn = __import__("psycopg2").connect(url)
        journal.ensure_schema(conn)
        conn.close()
        documents = [
            {
                "embedding_id": "1:0",
                "vector": [0.1] * 8,
                "metadata": {"title": "a"},
                "_meta": {"op": "c"},
            },
            {
                "embedding_id": "2:0",
                "vector": [0.2] * 8,
                "metadata": {"title": "b"},
                "_meta": {"op": "c"},
            },
            {"embedding_id": "1:0", "_meta": {"op": "d"}},
            {
                "embedding_id": "3:0",
                "vector": [0.3] * 8,
                "metadata": {"title": "c"},
                "_meta": {"op": "c"},
            },
        ]
        for offset, document in enumerate(documents):
            sql(
                url,
                'INSERT INTO flow.journal (collection, "offset", key, document, '
                "commit_lsn) VALUES ('sophia/vector_updates', %s, %s, %s, '0/0')",
                params=(offset, json.dumps([document["embedding_id"]]), json.dumps(document)),
            )
        index = PineconeResource(
            postgres=PostgresResource(url_env="PINECONE_SYNC_URL"),
            host=server.host,
            namespace=NAMESPACE,
        ).open()
        report = sync_index(index, url, batch_documents=2)

        assert set(server.namespaces[NAMESPACE]) == {"2:0", "3:0"}
        assert (report.applied_offset, report.lag_documents) == (3, 0)
        assert index.applied_offset() == 3
    finally:
        drop_database(url)


def test_configuration_chooses_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from resources.vector_index import PgVectorResource, configured_index

    postgres = PostgresResource()
    monkeypatch.delenv("SOPHIA_PINECONE_HOST", raising=False)
    assert isinstance(configured_index(postgres), PgVectorResource)
    monkeypatch.setenv("SOPHIA_PINECONE_HOST", "https://sophia-ai-vectors.example")
    assert isinstance(configured_index(postgres), PineconeResource)
