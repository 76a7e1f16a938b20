"""The capture against a real embedded Postgres: documents, TOAST, types, reduction,
quarantine, and the reduced view equal to the source."""

from __future__ import annotations

import logging
import random
import string
import time
from pathlib import Path

import pytest

from tests.support.cdc import (
    COLLECTION,
    catalog_copy,
    duplicated_changes,
    load,
    reduced_state,
    runner,
    source_state,
    sql,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def catalog(tmp_path: Path):
    return load(catalog_copy(tmp_path, chunk_size=100))


def _big_text(rng: random.Random, size: int) -> str:
    """Incompressible, so Postgres stores it out of line (TOAST)."""
    return "".join(rng.choices(string.ascii_letters + string.digits + " ", k=size))


def _journal(url: str) -> list[dict]:
    rows = sql(
        url,
        'SELECT document FROM flow.journal WHERE collection = %s ORDER BY "offset"',
        params=(COLLECTION,),
    )
    return [row[0] for row in rows]


def test_mixed_workload_reduced_view_equals_source(source: str, catalog) -> None:
    rng = random.Random(7)
    sql(
        source,
        "INSERT INTO documents (id, title, body) SELECT g, 'seed ' || g, 'body ' || g "
        "FROM generate_series(1, 250) g",
    )
    capture = runner(source, catalog)
    capture.drain()  # backfill in 3 chunks

    big = _big_text(rng, 200_000)
    sql(
        source,
        "INSERT INTO documents (id, title, body) VALUES (1000, 'a', 'x'), (1001, 'b', 'y'), "
        "(1002, 'c', 'z')",  # a multi-row transaction
        "UPDATE documents SET body = %s WHERE id = 1002",
        params=(big,),
    )
    sql(source, "UPDATE documents SET title = 'retitled' WHERE id = 1002")  # body unchanged
    sql(source, "DELETE FROM documents WHERE id BETWEEN 10 AND 20")
    sql(
        source, "UPDATE documents SET body = body || ' edited', updated_at = now() WHERE id % 7 = 0"
    )
    conn_rollback = __import__("psycopg2").connect(source)
    with conn_rollback.cursor() as cur:
        cur.execute("INSERT INTO documents (id, title, body) VALUES (5000, 'never', 'n')")
        cur.execute("DELETE FROM documents WHERE id = 1")
    conn_rollback.rollback()
    conn_rollback.close()
    report = capture.drain()

    assert reduced_state(source) == source_state(source)
    assert 5000 not in reduced_state(source) and 1 in reduced_state(source)
    assert reduced_state(source)[1002]["body"] == big
    assert report.collections[COLLECTION].documents == 3 + 2 + 11 + 35
    assert duplicated_changes(source) == []


def test_unchanged_toast_value_is_carried_into_the_journal(source: str, catalog) -> None:
    big = _big_text(random.Random(1), 100_000)
    sql(source, "INSERT INTO documents (id, title, body) VALUES (1, 't', %s)", params=(big,))
    capture = runner(source, catalog)
    capture.drain()
    sql(source, "UPDATE documents SET title = 'only the title' WHERE id = 1")
    capture.drain()

    last = _journal(source)[-1]
    assert last["_meta"]["op"] == "u"
    assert last["title"] == "only the title"
    assert last["body"] == big
    assert last["_meta"]["before"]["title"] == "t"


def test_documents_carry_estuary_meta_and_faithful_types(source: str, catalog) -> None:
    capture = runner(source, catalog)
    capture.drain()
    sql(
        source,
        "INSERT INTO documents (id, title, body, updated_at, price, tags, scores, attrs, "
        "published) VALUES (42, 'types', 'b', '2026-11-24 10:15:30.123456+02', "
        "'12345678901234567890.123456789', ARRAY['a b', 'c\"d', NULL], ARRAY[1, -2], "
        '\'{"nested": {"n": 1.5, "list": [true, null]}}\', true)',
    )
    sql(source, "UPDATE documents SET price = NULL, published = false WHERE id = 42")
    sql(source, "DELETE FROM documents WHERE id = 42")
    capture.drain()

    created, updated, deleted = _journal(source)
    assert created["price"] == "12345678901234567890.123456789"  # every digit kept
    assert created["tags"] == ["a b", 'c"d', None]
    assert created["scores"] == [1, -2]
    assert created["attrs"] == {"nested": {"n": 1.5, "list": [True, None]}}
    assert created["published"] is True
    assert created["updated_at"] == "2026-11-24T08:15:30.123456+00:00"
    meta = created["_meta"]
    assert meta["op"] == "c"
    assert {"ts_ms", "schema", "table", "loc", "txid"} <= set(meta["source"])
    assert (meta["source"]["schema"], meta["source"]["table"]) == ("public", "documents")
    assert meta["source"]["loc"][1] > 0 and meta["source"]["loc"][2] > 0
    assert updated["_meta"]["op"] == "u"
    assert updated["price"] is None and updated["published"] is False
    assert updated["_meta"]["before"]["price"] == "12345678901234567890.123456789"
    assert deleted == {"id": 42, "_meta": deleted["_meta"]}
    assert deleted["_meta"]["op"] == "d"
    assert 42 not in reduced_state(source)


def test_backfill_documents_are_marked_as_snapshot(source: str, catalog) -> None:
    sql(
        source,
        "INSERT INTO documents (id, title, body) SELECT g, 't', 'b' FROM generate_series(1, 5) g",
    )
    runner(source, catalog).drain()
    journal = _journal(source)
    assert [d["id"] for d in journal] == [1, 2, 3, 4, 5]
    assert all(d["_meta"]["source"]["snapshot"] is True for d in journal)


def test_backfilled_values_equal_streamed_ones(source: str, catalog) -> None:
    """The backfill reads each value as its type's output function writes it, as pgoutput
    sends it: a cast to text writes `true` for a boolean (read back as false)."""
    row = (
        "INSERT INTO documents (id, title, body, published, price, tags) "
        "VALUES ({}, 't', 'b', true, 1.50, '{{a,\"b c\"}}')"
    )
    sql(source, row.format(1))
    runner(source, catalog).drain()  # id 1 backfilled
    sql(source, row.format(2))
    runner(source, catalog).drain()  # id 2 streamed
    backfilled, streamed = _journal(source)
    assert backfilled["_meta"]["source"].get("snapshot") is True
    assert "snapshot" not in streamed["_meta"]["source"]
    for field in ("published", "price", "tags"):
        assert backfilled[field] == streamed[field], field
    assert backfilled["published"] is True


def test_invalid_document_is_quarantined_and_the_rest_flows(source: str, catalog) -> None:
    capture = runner(source, catalog)
    capture.drain()
    sql(
        source,
        "INSERT INTO documents (id, title, body) VALUES (1, 'fine', 'b'), "
        "(2, NULL, 'title is null'), (3, 'also fine', 'b')",
    )
    report = capture.drain()

    assert sorted(reduced_state(source)) == [1, 3]
    assert report.collections[COLLECTION].quarantined == 1
    ((document, reason, where),) = sql(
        source,
        "SELECT document, reason, source FROM flow.quarantine WHERE collection = %s",
        params=(COLLECTION,),
    )
    assert document["id"] == 2
    assert "title" in reason and reason.startswith("schema:")
    assert where["table"] == "documents" and where["loc"][1] > 0


def test_capture_resumes_from_its_checkpoint(source: str, catalog) -> None:
    capture = runner(source, catalog)
    sql(source, "INSERT INTO documents (id, title, body) VALUES (1, 'a', 'b')")
    capture.drain()
    sql(source, "INSERT INTO documents (id, title, body) VALUES (2, 'a', 'b')")
    runner(source, catalog).drain()  # a new process would start like this

    assert [d["id"] for d in _journal(source)] == [1, 2]
    # The slot is told what the journal holds, so it releases the WAL behind it. The server
    # applies the feedback asynchronously: read until it has, within a deadline.
    deadline = time.monotonic() + 10
    while True:
        ((checkpoint, confirmed),) = sql(
            source,
            "SELECT c.lsn, s.confirmed_flush_lsn FROM flow.checkpoints c, "
            "pg_replication_slots s WHERE s.slot_name = 'flow_slot'",
        )
        if confirmed == checkpoint or time.monotonic() > deadline:
            break
    assert confirmed == checkpoint


def test_backfill_chunks_end_at_the_byte_limit(
    source: str, catalog, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Ten 1 MB rows under a 2 MB limit: chunks of two rows, not one chunk of all ten."""
    sql(
        source,
        "INSERT INTO documents (id, title, body) "
        "SELECT g, 't', repeat(md5(g::text), 32768) FROM generate_series(1, 10) g",
    )
    monkeypatch.setenv("SOPHIA_FLOW_BATCH_MB", "2")
    with caplog.at_level(logging.INFO, logger="sophia.flow"):
        runner(source, catalog).drain()
    chunks = [r.getMessage() for r in caplog.records if r.getMessage().startswith("backfill of")]
    assert chunks[:5] == [
        f"backfill of public.documents: 2 rows, up to key ['{2 * n}']" for n in range(1, 6)
    ]
    assert sorted(reduced_state(source)) == list(range(1, 11))
