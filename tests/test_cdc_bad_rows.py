"""Rows Postgres accepts but a naive decoder does not: each becomes a faithful document or
goes to the quarantine with its reason and source position, the capture confirms past it,
and `sophia flow quarantine` lists, shows and replays what it holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sophia_assets.flow.quarantine import ReplayRefused, replay
from tests.support.cdc import COLLECTION, catalog_copy, load, runner, sql
from tests.support.processes import run_sophia

pytestmark = pytest.mark.slow

EXTRA_COLUMNS = "ALTER TABLE documents ADD COLUMN extra json, ADD COLUMN due date"
# id offset -> (SET clause of the row, what must become of it: a value or a reason snippet)
BAD_ROWS = {
    0: ("attrs = (repeat('[', 2000) || repeat(']', 2000))::jsonb", "depth limit"),
    1: ("attrs = (repeat('[', 300) || repeat(']', 300))::jsonb", "not writable as JSON"),
    2: ("attrs = '{\"n\": 123456789012345678901234567890}'", "more digits than 64 bits"),
    3: ("attrs = '[1e400]'", "column 'attrs'"),
    4: ("updated_at = '0044-03-15 12:00:00+00 BC'", "outside RFC 3339"),
    5: ("updated_at = '12000-01-01 00:00:00+00'", "outside RFC 3339"),
    6: ('extra = \'{"a": "x\\u0000y"}\'', "U+0000"),
    7: ("due = '0200-02-02 BC'", "outside RFC 3339"),
    8: ("updated_at = 'infinity'", {"updated_at": "9999-12-31T23:59:59Z"}),
    9: ("updated_at = '-infinity'", {"updated_at": "0000-01-01T00:00:00Z"}),
    10: ("price = 'NaN'", {"price": "NaN"}),
    11: ("due = 'infinity'", {"due": "9999-12-31"}),
    12: ('extra = \'{"deep": [[[1]]], "big": 18446744073709551615}\'', None),
    13: ("extra = '\"\\ud800\"'", "column 'extra'"),  # a lone surrogate: valid json text
    # deep enough to overflow Python's recursion where orjson does not
    14: ("attrs = (repeat('[', 1000) || repeat(']', 1000))::jsonb", "not writable as JSON"),
    15: (
        "attrs = (repeat('[', 1000) || '123456789012345678901234' || repeat(']', 1000))::jsonb",
        "nested too deep",
    ),
    16: ("extra = (repeat('[', 600) || '\"\\u0000\"' || repeat(']', 600))::json", "U+0000"),
}


def _write_rows(url: str, first_id: int) -> None:
    """The bad rows at first_id + offset, each in its own transaction, then a good one."""
    for offset, (assignment, _) in BAD_ROWS.items():
        row = first_id + offset
        sql(
            url,
            f"INSERT INTO documents (id, title, body) VALUES ({row}, 't', 'b')",
            f"UPDATE documents SET {assignment} WHERE id = {row}",
        )
    sql(url, f"INSERT INTO documents (id, title, body) VALUES ({first_id + 99}, 'ok', 'b')")


def _quarantined(url: str) -> dict[int, tuple[str, dict]]:
    rows = sql(url, "SELECT document, reason, source FROM flow.quarantine ORDER BY id")
    return {int(document["id"]): (reason, where) for document, reason, where in rows}


@pytest.mark.parametrize("path", ["backfill", "stream"])
def test_each_bad_value_is_quarantined_or_faithful_and_the_capture_goes_on(
    source: str, tmp_path: Path, path: str
) -> None:
    sql(source, EXTRA_COLUMNS)
    catalog = load(catalog_copy(tmp_path, chunk_size=5))
    if path == "stream":
        runner(source, catalog).drain()  # backfill of an empty table: what follows streams
    _write_rows(source, 1000)
    runner(source, catalog).drain()

    quarantined = _quarantined(source)
    # a streamed insert and its update are two changes; the backfill reads one row
    for offset, (_, expected) in BAD_ROWS.items():
        row = 1000 + offset
        if isinstance(expected, str):
            assert row in quarantined, f"row {row} ({expected}) not quarantined"
            reason, where = quarantined[row]
            assert reason.startswith(("value: ", "not writable")), reason
            assert expected in reason, reason
            assert where["table"] == "documents" and where["loc"][0 if path == "backfill" else 1]
        else:
            assert row not in quarantined, quarantined.get(row)
    reduced = _reduced_documents(source)
    for offset, (_, expected) in BAD_ROWS.items():
        if isinstance(expected, dict):
            document = reduced[1000 + offset]
            assert {k: document[k] for k in expected} == expected
    assert reduced[1012]["extra"] == {"deep": [[[1]]], "big": 18446744073709551615}
    assert 1099 in reduced  # written after the bad rows: the capture went on

    # confirmed past them: a second drain journals nothing again and quarantines nothing new
    count = len(sql(source, "SELECT id FROM flow.quarantine"))
    report = runner(source, catalog).drain()
    assert report.documents == 0 and report.collections.get(COLLECTION) is None
    assert len(sql(source, "SELECT id FROM flow.quarantine")) == count


def _reduced_documents(url: str) -> dict[int, dict]:
    rows = sql(url, "SELECT document FROM flow.reduced WHERE collection = %s", params=(COLLECTION,))
    return {document["id"]: document for (document,) in rows}


def test_a_replay_after_a_schema_fix_publishes_in_order(source: str, tmp_path: Path) -> None:
    specs = catalog_copy(tmp_path)
    catalog = load(specs)
    runner(source, catalog).drain()
    sql(
        source,
        "INSERT INTO documents (id, title, body) VALUES (1, 't1', NULL), (2, 't2', NULL)",
        "INSERT INTO documents (id, title, body) VALUES (3, 't3', 'fine')",
    )
    sql(source, "UPDATE documents SET title = 't2 again' WHERE id = 2")  # still no body
    sql(source, "UPDATE documents SET body = 'fixed in the source' WHERE id = 1")
    sql(source, "UPDATE documents SET updated_at = '0001-01-01 00:00:00+00 BC' WHERE id = 3")
    runner(source, catalog).drain()
    env = {"SOPHIA_POSTGRES_URL": source, "SOPHIA_FLOW_SPECS": str(specs)}

    listed = run_sophia("flow", "quarantine", "list", "--json", env=env).stdout.splitlines()
    entries = [json.loads(line) for line in listed]
    assert [(e["collection"], e["reason"].split(":")[0]) for e in entries] == [
        (COLLECTION, "schema"),
        (COLLECTION, "schema"),
        (COLLECTION, "schema"),
        (COLLECTION, "value"),
    ]
    table = run_sophia("flow", "quarantine", "list", env=env).stdout
    assert str(entries[0]["id"]) in table and "schema" in table
    shown = json.loads(
        run_sophia("flow", "quarantine", "show", str(entries[1]["id"]), env=env).stdout
    )
    assert shown["document"]["id"] == 2 and shown["source"]["loc"][1] > 0
    missing = run_sophia("flow", "quarantine", "show", "999999", env=env, check=False)
    assert missing.returncode == 1 and "quarantine list" in missing.stderr

    # the schema is fixed: body may be null
    schema_path = specs / "schemas" / "postgresql_cdc.schema.yaml"
    schema = yaml.safe_load(schema_path.read_text())
    schema["properties"]["body"] = {"type": ["string", "null"]}
    schema_path.write_text(yaml.safe_dump(schema, sort_keys=False))

    replayed = run_sophia("flow", "quarantine", "replay", COLLECTION, env=env).stdout
    assert "2 published, 1 dropped" in replayed and "0 still invalid, 1 kept" in replayed, replayed
    documents = _reduced_documents(source)
    # row 1's quarantined insert is older than its journaled fix: dropped, not published
    assert documents[1]["body"] == "fixed in the source"
    # row 2's two changes, in capture order: the later title wins
    assert documents[2]["title"] == "t2 again" and documents[2]["body"] is None
    titles = sql(
        source,
        "SELECT document ->> 'title' FROM flow.journal WHERE key = '[2]' ORDER BY \"offset\"",
    )
    assert [t for (t,) in titles] == ["t2", "t2 again"]
    left = [
        json.loads(line)
        for line in run_sophia("flow", "quarantine", "list", "--json", env=env).stdout.splitlines()
    ]
    assert [e["reason"].split(":")[0] for e in left] == ["value"]


def test_a_replay_refuses_while_the_capture_runs(source: str, tmp_path: Path) -> None:
    catalog = load(catalog_copy(tmp_path))
    capture = runner(source, catalog)
    capture.drain()
    sql(source, "INSERT INTO documents (id, title, body) VALUES (1, 't', NULL)")
    capture.drain()
    import psycopg2

    from sophia_assets.flow.bindings import capture_bindings
    from sophia_assets.flow.tasks import capture_lock

    holder = psycopg2.connect(source)  # as a serving capture holds it
    try:
        with holder.cursor() as cur:
            cur.execute(
                "SELECT pg_advisory_lock(hashtext(%s))", (capture_lock(capture.settings.task),)
            )
        conn = psycopg2.connect(source)
        binding = capture_bindings(catalog.captures[capture.settings.task], catalog)[0]
        with pytest.raises(ReplayRefused, match="is running"):
            replay(conn, capture.settings.task, binding)
        conn.close()
    finally:
        holder.close()
    assert len(sql(source, "SELECT id FROM flow.quarantine")) == 1
