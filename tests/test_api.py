"""The search API: routes, access control, rate limit and errors on stand-in parts (fast),
then `sophia api serve` on the real model, pgvector and demo documents (slow)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sophia_assets.api.app import create_app
from sophia_assets.api.batching import EmbeddingBatcher
from sophia_assets.api.keys import ApiKeys, bearer
from sophia_assets.api.models import MAX_TEXT_CHARS
from sophia_assets.api.ratelimit import RateLimiter
from sophia_assets.api.service import SearchService, ServiceSettings
from tests.support.search_api import memory_parts

KEY = "test-key-6f1c2a9e"
AUTH = {"Authorization": f"Bearer {KEY}"}


class Clock:
    """Moves on by `tick` seconds at each reading, so buckets refill unless a test stops it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.tick = 10.0

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


@pytest.fixture
def parts():
    return memory_parts()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(parts, clock) -> Iterator[TestClient]:
    embedder, index, journal = parts
    service = SearchService(embedder, index, journal, ServiceSettings(max_lag_seconds=60))
    app = create_app(service, ApiKeys([KEY, "other-key"]), RateLimiter(5, 3, clock=clock))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def search(client: TestClient, body, headers=AUTH):
    """POSTs `body` as JSON written by `json.dumps` (escapes, NaN and all)."""
    headers = {**headers, "Content-Type": "application/json"}
    return client.post("/v1/search", content=json.dumps(body), headers=headers)


def test_search_returns_the_nearest_document_first(client: TestClient) -> None:
    answer = search(client, {"text": "cats that purr", "top_k": 2})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert [r["source_key"] for r in data["results"]][0] == 1
    assert len(data["results"]) == 2
    first = data["results"][0]
    assert first == {
        "id": "1:0",
        "score": first["score"],
        "title": "Cats",
        "chunk": 0,
        "source_key": 1,
        "text": None,
    }
    assert data["results"][0]["score"] > data["results"][1]["score"]
    assert data["model"] == "fake-bag-of-words" and data["index"] == "memory:test-vectors"
    assert data["took_ms"] >= 0


def test_filter_keeps_only_matching_documents_and_text_is_included(client: TestClient) -> None:
    body = {"text": "cats that purr", "filter": {"title": "Bread"}, "include_text": True}
    results = search(client, body).json()["results"]
    assert [(r["source_key"], r["text"]) for r in results] == [
        (3, "Bread\n\nBake the bread in a hot oven until golden.")
    ]


def test_requests_without_a_valid_key_get_401_with_no_detail(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        answer = search(client, {"text": "cats"}, headers)
        assert answer.status_code == 401
        assert answer.json() == {"error": "unauthorized", "fields": []}
        assert answer.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/documents/1").status_code == 401
    # Even malformed input gets 401 first: nothing about the request is judged without a key.
    bad = client.post("/v1/search", content=b"{", headers={"Content-Type": "application/json"})
    assert bad.status_code == 401
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("body", "status", "field", "rule"),
    [
        ({"text": ""}, 422, "text", "non-whitespace"),
        ({"text": " \n\t "}, 422, "text", "non-whitespace"),
        ({"text": "x" * (MAX_TEXT_CHARS + 1)}, 413, "text", f"at most {MAX_TEXT_CHARS}"),
        ({"text": "cats", "top_k": 0}, 422, "top_k", "greater than or equal to 1"),
        ({"text": "cats", "top_k": 101}, 422, "top_k", "less than or equal to 100"),
        ({"text": "cats", "top_k": "many"}, 422, "top_k", "integer"),
        ({"text": "cats", "filter": {"colour": "red"}}, 422, "filter", "unknown filter field"),
        ({"text": "cats", "filter": {"title": ["a"]}}, 422, "filter", "string, number"),
        ({"text": "cats", "filter": {"source_key": 2**64}}, 422, "filter", "64-bit"),
        ({"text": "cats\ud800"}, 422, "text", "unicode"),
        ({"text": "cats", "extra": 1}, 422, "extra", "not permitted"),
        ({"top_k": 3}, 422, "text", "required"),
        (["text"], 422, "body", ""),
    ],
)
def test_bad_input_gets_a_4xx_naming_the_field_and_rule(
    client: TestClient, body, status: int, field: str, rule: str
) -> None:
    answer = search(client, body)
    assert answer.status_code == status, answer.text
    fields = answer.json()["fields"]
    assert any(f["field"] == field and rule in f["rule"] for f in fields), fields


def test_malformed_json_and_wrong_content_type(client: TestClient) -> None:
    json_type = {**AUTH, "Content-Type": "application/json"}
    malformed = client.post("/v1/search", content=b'{"text": ', headers=json_type)
    assert malformed.status_code == 400
    assert malformed.json() == {
        "error": "malformed JSON",
        "fields": [{"field": "body", "rule": "must be a JSON object"}],
    }
    form = client.post("/v1/search", data={"text": "cats"}, headers=AUTH)
    assert form.status_code == 415
    assert form.json()["fields"] == [{"field": "Content-Type", "rule": "application/json"}]
    huge = client.post("/v1/search", content=b" " * 70_000, headers=json_type)
    assert huge.status_code == 413


def test_rate_limit_answers_429_with_retry_after_per_key(client: TestClient, clock) -> None:
    clock.tick = 0.0
    statuses = [search(client, {"text": "cats"}).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = search(client, {"text": "cats"})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    other = search(client, {"text": "cats"}, {"Authorization": "Bearer other-key"})
    assert other.status_code == 200  # the other key has its own bucket
    clock.now += 0.2  # one token back at 5/s
    assert search(client, {"text": "cats"}).status_code == 200


def test_documents_answer_the_reduced_document_and_its_vector_ids(client: TestClient) -> None:
    answer = client.get("/v1/documents/2", headers=AUTH)
    assert answer.status_code == 200
    assert answer.json() == {
        "source_key": 2,
        "collection": "sophia/postgresql_cdc",
        "document": {
            "id": 2,
            "title": "Rivers",
            "body": "Rivers carry fresh water down to the sea.",
        },
        "journal_offset": 7,
        "vector_ids": ["2:0"],
    }
    missing = client.get("/v1/documents/99", headers=AUTH)
    assert missing.status_code == 404 and "99" in missing.json()["error"]


def test_readiness_names_each_check_and_fails_on_lag_or_index(client: TestClient, parts) -> None:
    _, index, journal = parts
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert [(c["name"], c["ok"]) for c in ready.json()["checks"]] == [
        ("model", True),
        ("index", True),
        ("index_lag", True),
    ]
    journal.lag_seconds = 61.0
    lagging = client.get("/readyz")
    assert lagging.status_code == 503
    assert {c["name"]: c["ok"] for c in lagging.json()["checks"]}["index_lag"] is False
    index.reachable = False
    down = {c["name"]: c["ok"] for c in client.get("/readyz").json()["checks"]}
    assert down == {"model": True, "index": False, "index_lag": False}


def test_openapi_document_describes_the_routes(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert {"/v1/search", "/v1/documents/{source_key}", "/healthz", "/readyz"} <= set(
        document["paths"]
    )
    schema = document["components"]["schemas"]["SearchRequest"]["properties"]
    assert schema["top_k"]["maximum"] == 100 and schema["text"]["maxLength"] == MAX_TEXT_CHARS


def test_keys_never_appear_in_logs_or_answers(client: TestClient, parts, caplog) -> None:
    _, index, _ = parts
    index.reachable = False  # a failing request: 500 and an error log line
    with caplog.at_level(logging.DEBUG):
        failed = search(client, {"text": "cats"})
        refused = search(client, {"text": "cats"}, {"Authorization": f"Bearer {KEY}x"})
    assert failed.status_code == 500 and failed.json() == {"error": "internal error", "fields": []}
    assert caplog.records, "the failure is logged"
    for text in (caplog.text, failed.text, refused.text):
        assert KEY not in text


def test_keys_are_matched_whole_and_bearer_is_parsed() -> None:
    keys = ApiKeys.from_text(" a-key , b-key,,")
    assert len(keys) == 2
    assert keys.identify("a-key") and keys.identify("b-key")
    assert keys.identify("a-key") != keys.identify("b-key")
    assert keys.identify("a-ke") is None and keys.identify("") is None
    assert "a-key" not in keys.identify("a-key")
    assert bearer("Bearer t0k") == "t0k" and bearer("bearer t0k") == "t0k"
    assert bearer("Basic t0k") is None and bearer("Bearer ") is None and bearer(None) is None


def test_concurrent_query_embeddings_share_model_calls() -> None:
    gate = threading.Event()
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> list[list[float]]:
        gate.wait(timeout=10)
        calls.append(texts)
        return [[float(len(t))] for t in texts]

    async def main():
        batcher = EmbeddingBatcher(embed, max_batch=8)
        first = asyncio.ensure_future(batcher.embed("a"))
        await asyncio.sleep(0)  # the first call is now on the model thread, held by the gate
        rest = [asyncio.ensure_future(batcher.embed("b" * n)) for n in range(1, 11)]
        await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(first, *rest)
        batcher.close()
        return results

    results = asyncio.run(main())
    assert results == [[1.0]] + [[float(n)] for n in range(1, 11)]
    assert [len(c) for c in calls] == [1, 8, 2]


def test_two_model_workers_embed_at_once() -> None:
    both_inside = threading.Barrier(2, timeout=10)  # passes only if two calls overlap

    def embed(texts: list[str]) -> list[list[float]]:
        both_inside.wait()
        return [[float(len(t))] for t in texts]

    async def main():
        batcher = EmbeddingBatcher(embed, max_batch=1, workers=2)
        results = await asyncio.gather(batcher.embed("a"), batcher.embed("bb"))
        batcher.close()
        return results

    assert asyncio.run(main()) == [[1.0], [2.0]]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
BODIES = (
    st.fixed_dictionaries(
        {},
        optional={
            "text": st.text(max_size=40) | st.integers() | st.none() | st.just("x" * 2001),
            "top_k": st.integers(-5, 200) | st.floats() | st.text(max_size=4) | st.booleans(),
            "filter": st.dictionaries(
                st.sampled_from(["source_key", "title", "chunk", "model", "colour"]) | st.text(),
                JSON,
                max_size=3,
            )
            | JSON,
            "include_text": JSON,
        },
    )
    | JSON
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=BODIES)
def test_no_input_gets_a_500(client: TestClient, body) -> None:
    answer = search(client, body)
    assert answer.status_code < 500, (body, answer.text)
    if answer.status_code != 200:
        assert answer.json()["error"]


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=60), media=st.sampled_from(["application/json", "text/plain", ""]))
def test_no_raw_body_gets_a_500(client: TestClient, raw: bytes, media: str) -> None:
    answer = client.post("/v1/search", content=raw, headers={**AUTH, "Content-Type": media})
    assert 400 <= answer.status_code < 500, (raw, answer.text)


def _samples(client: TestClient) -> dict[tuple[str, tuple], float]:
    """GET /metrics (no key), parsed by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def test_metrics_count_requests_by_route_template_and_status(client: TestClient, clock) -> None:
    for key in (1, 2, 99):  # three keys, one route
        client.get(f"/v1/documents/{key}", headers=AUTH)
    search(client, {"text": "cats"}, {})  # refused before routing: still its route
    client.get("/no/such/path", headers=AUTH)
    clock.tick = 0.0
    for _ in range(3):  # the 404 took a token too: the third is over the burst of 3
        search(client, {"text": "cats"})
    samples = _samples(client)

    def requests(route: str, method: str, status: str) -> float:
        labels = (("method", method), ("route", route), ("status", status))
        return samples.get(("sophia_api_requests_total", labels), 0.0)

    documents = "/v1/documents/{source_key}"
    assert requests(documents, "GET", "200") == 2
    assert requests(documents, "GET", "404") == 1
    assert requests("/v1/search", "POST", "401") == 1
    assert requests("/v1/search", "POST", "200") == 2
    assert requests("/v1/search", "POST", "429") == 1
    assert requests("unmatched", "GET", "404") == 1
    assert samples[("sophia_api_rate_limited_total", ())] == 1
    # A 404 without a route is one series, whatever the path; no key or path is a label.
    assert not any("99" in str(labels) or "no/such" in str(labels) for _, labels in samples)
    assert samples[("sophia_api_request_duration_seconds_count", (("route", "/v1/search"),))] == 4
    assert samples[("sophia_api_requests_in_flight", ())] == 0
