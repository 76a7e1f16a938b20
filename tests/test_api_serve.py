"""`sophia api serve` as a user runs it: the real model, pgvector and the journals in a
fresh database holding demo documents run through capture, embedding and indexing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg2
import pytest

from sophia_assets.embedding.derivation import VectorUpdates
from sophia_assets.embedding.embedder import Embedder, ModelCard, default_model_path
from sophia_assets.embedding.index_sync import sync_index
from sophia_assets.postgres.embedded_server import POSTGRES_URL_ENV
from sophia_assets.vectors.pgvector import PgVectorIndex
from tests.support.cdc import catalog_copy, drop_database, load, new_database, runner, sql
from tests.support.search_api import ServedApi, served_api

pytestmark = pytest.mark.slow

KEY = "serve-test-key-93be0c"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def source(postgres_url: str) -> Iterator[str]:
    """One database for the module: 100 demo documents, captured, embedded and indexed."""
    url = new_database(postgres_url)
    yield url
    drop_database(url)


@pytest.fixture(scope="module")
def served(
    source: str, tmp_path_factory, shared_model_cache: Path, corpus_file: Path
) -> Iterator[ServedApi]:
    from sophia_assets.demo.corpus import load_corpus
    from sophia_assets.demo.seed import seed_documents

    # Module fixtures run before the per-test isolation (conftest), so this one isolates
    # itself the same way: a home of its own, the session's model cache.
    homes = {
        "SOPHIA_HOME": str(tmp_path_factory.mktemp("serve-home")),
        "SOPHIA_CACHE": str(shared_model_cache),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in homes.items():
            patch.setenv(name, value)
        seed_documents(source, load_corpus(corpus_file.parent), rows=100)
        catalog = load(catalog_copy(tmp_path_factory.mktemp("catalog")))
        runner(source, catalog).drain()
        embedder = Embedder(ModelCard.read(default_model_path()), device="cpu", backend="auto")
        VectorUpdates(catalog, "sophia/vector_updates", source, lambda: embedder).run()
        sync_index(PgVectorIndex(lambda: psycopg2.connect(source)), source)
        env = {POSTGRES_URL_ENV: source, "SOPHIA_API_KEYS": f"another-key,{KEY}"}
        with served_api(env, "--rate", "1000", "--burst", "1000") as api:
            yield api
    assert KEY not in api.output  # nor in uvicorn's access log or any error


def _first_paragraph(source: str, key: int) -> tuple[str, str]:
    (title, body) = sql(source, "SELECT title, body FROM documents WHERE id = %s", params=(key,))[0]
    return title, body.split("\n\n")[0].replace("\n", " ")[:200]


def test_serve_finds_documents_from_their_content(served: ServedApi, source: str) -> None:
    for key in (42, 97):
        title, query = _first_paragraph(source, key)
        answer = httpx.post(f"{served.url}/v1/search", json={"text": query}, headers=AUTH)
        assert answer.status_code == 200, answer.text
        data = answer.json()
        best = data["results"][0]
        assert (best["source_key"], best["title"]) == (key, title)
        assert best["id"].startswith(f"{key}:") and best["score"] > data["results"][1]["score"]
        assert len(data["results"]) == 10
        assert data["model"] == "sentence-transformers/all-MiniLM-L6-v2"
        assert data["index"] == "pgvector:sophia-ai-vectors"

    title, query = _first_paragraph(source, 42)
    filtered = httpx.post(
        f"{served.url}/v1/search",
        json={"text": query, "filter": {"source_key": 7}, "include_text": True, "top_k": 3},
        headers=AUTH,
    ).json()["results"]
    assert [r["source_key"] for r in filtered] == [7]
    assert filtered[0]["text"] and filtered[0]["text"] in _document_text(source, 7)

    document = httpx.get(f"{served.url}/v1/documents/42", headers=AUTH).json()
    assert document["document"]["title"] == title and "42:0" in document["vector_ids"]
    assert httpx.get(f"{served.url}/v1/documents/100000", headers=AUTH).status_code == 404

    ready = httpx.get(f"{served.url}/readyz").json()
    assert ready["ready"] and [c["name"] for c in ready["checks"]] == [
        "model",
        "index",
        "index_lag",
    ]


def _document_text(source: str, key: int) -> str:
    title, body = sql(source, "SELECT title, body FROM documents WHERE id = %s", params=(key,))[0]
    return f"{title}\n\n{body}"


def test_serve_refuses_without_a_key_and_answers_bad_input_with_4xx(served: ServedApi) -> None:
    url = f"{served.url}/v1/search"
    assert httpx.post(url, json={"text": "cats"}).status_code == 401
    assert (
        httpx.post(url, json={"text": "cats"}, headers={"Authorization": "Bearer no"}).status_code
        == 401
    )
    assert httpx.get(f"{served.url}/healthz").status_code == 200
    bad = [
        ({"json": {"text": "  "}}, 422),
        ({"json": {"text": "x" * 5000}}, 413),
        ({"json": {"text": "cats", "top_k": 1000}}, 422),
        ({"json": {"text": "cats", "filter": {"colour": "red"}}}, 422),
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400),
        ({"content": b"text=cats", "headers": {"Content-Type": "text/plain"}}, 415),
    ]
    for request, status in bad:
        headers = {**AUTH, **request.pop("headers", {})}
        answer = httpx.post(url, headers=headers, **request)
        assert answer.status_code == status, (request, answer.text)
        assert answer.json()["error"] and (status == 400 or answer.json()["fields"])


def test_concurrent_requests_all_succeed(served: ServedApi, source: str) -> None:
    """A small, bounded load: 80 searches, 16 at a time; every one answers 200 with results."""
    queries = [_first_paragraph(source, key)[1] for key in range(1, 41)] * 2

    async def drive() -> list[httpx.Response]:
        limit = asyncio.Semaphore(16)
        async with httpx.AsyncClient(base_url=served.url, headers=AUTH, timeout=60) as client:

            async def one(text: str) -> httpx.Response:
                async with limit:
                    return await client.post("/v1/search", json={"text": text, "top_k": 5})

            return await asyncio.gather(*(one(q) for q in queries))

    answers = asyncio.run(drive())
    assert [a.status_code for a in answers] == [200] * len(queries)
    assert all(len(a.json()["results"]) == 5 for a in answers)
    # The service's own /metrics (no key) counted every one of them, and none is in flight.
    from prometheus_client.parser import text_string_to_metric_families

    page = httpx.get(f"{served.url}/metrics")
    assert page.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page.text)
        for s in family.samples
    }
    ok = (("method", "POST"), ("route", "/v1/search"), ("status", "200"))
    assert samples[("sophia_api_requests_total", ok)] >= len(queries)
    assert samples[("sophia_api_requests_in_flight", ())] == 0
