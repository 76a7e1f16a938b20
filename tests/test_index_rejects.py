"""A record the vector index refuses for good (here: a vector of the wrong dimension, as a
derivation with another model would write) is quarantined with the index's reason, and the
sync applies the rest and moves past it: on pgvector, and on Pinecone through the real SDK
against the loopback contract server."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg2
import pytest

from resources.postgres import PostgresResource
from resources.vector_index import PineconeResource
from sophia_assets.embedding.index_sync import sync_index
from sophia_assets.flow import journal
from sophia_assets.vectors import RecordsRejected, VectorIndex
from sophia_assets.vectors.pgvector import PgVectorIndex
from tests.support.cdc import drop_database, new_database, sql
from tests.support.contract_servers.pinecone import PineconeContractServer

UPDATES = "sophia/vector_updates"
DIMENSION = 8


def _vector(key: int, dimension: int = DIMENSION) -> dict:
    return {
        "embedding_id": f"{key}:0",
        "vector": [0.1 * key] * dimension,
        "metadata": {"title": f"doc {key}"},
        "_meta": {"op": "c"},
    }


JOURNAL = [_vector(1), _vector(2, dimension=3), _vector(3), _vector(4, dimension=5), _vector(5)]


@pytest.fixture
def url(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    database = new_database(postgres_url)
    monkeypatch.setenv("REJECTS_URL", database)
    conn = psycopg2.connect(database)
    journal.ensure_schema(conn)
    conn.close()
    for offset, document in enumerate(JOURNAL):
        sql(
            database,
            'INSERT INTO flow.journal (collection, "offset", key, document, commit_lsn) '
            "VALUES (%s, %s, %s, %s, '0/0')",
            params=(UPDATES, offset, json.dumps([document["embedding_id"]]), json.dumps(document)),
        )
    yield database
    drop_database(database)


@pytest.fixture(params=["pgvector", "pinecone"])
def index(request, url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[VectorIndex]:
    if request.param == "pgvector":
        yield PgVectorIndex(lambda: psycopg2.connect(url), dimension=DIMENSION)
        return
    monkeypatch.setenv("SOPHIA_PINECONE_API_KEY", "test-key-not-a-secret")
    with PineconeContractServer(dimension=DIMENSION) as server:
        yield PineconeResource(
            postgres=PostgresResource(url_env="REJECTS_URL"), host=server.host, retries=1
        ).open()
    assert server.violations == [], server.violations


def test_a_rejected_record_is_quarantined_and_the_sync_goes_on(url: str, index) -> None:
    report = sync_index(index, url, batch_documents=3)

    assert index.ids() == {"1:0", "3:0", "5:0"}
    assert (report.applied_offset, report.quarantined, report.upserts) == (4, 2, 3)
    rows = sql(url, "SELECT document, reason, source FROM flow.quarantine ORDER BY id")
    assert [(d["embedding_id"], s["offset"]) for d, _, s in rows] == [("2:0", 1), ("4:0", 3)]
    assert all(r.startswith(f"index {index.name}: {index.backend}: ") for _, r, _ in rows)
    assert all("dimension" in r for _, r, _ in rows), rows

    again = sync_index(index, url)  # past them for good: nothing retried, nothing doubled
    assert (again.upserts, again.quarantined) == (0, 0)
    assert len(sql(url, "SELECT id FROM flow.quarantine")) == 2


def test_an_index_that_refuses_a_whole_batch_fails_the_sync_and_keeps_the_stream(
    url: str,
) -> None:
    """Every record refused: the index is wrong, not the records; nothing is quarantined
    and the offset stays, so the vectors are applied once the index is fixed."""
    index = PgVectorIndex(lambda: psycopg2.connect(url), dimension=DIMENSION + 1)
    with pytest.raises(RecordsRejected, match="refused all 3 records"):
        sync_index(index, url, batch_documents=3)
    assert sql(url, "SELECT count(*) FROM flow.quarantine") == [(0,)]
    assert index.applied_offset() == -1
