"""Any workload, any crash: hypothesis generates transactions over two bound tables (keys of
integer, numeric and text columns), with inserts, updates of small and TOAST-sized values,
key changes, deletes and transactions that touch both tables, some racing a chunked
backfill, while `sophia flow serve` is killed with SIGKILL after chosen transactions. After
a final drain each collection's reduced view equals its table, and no source change is
journaled twice."""

from __future__ import annotations

import os
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.cdc import (
    add_collection,
    catalog_copy,
    drop_database,
    duplicated_changes,
    flow_process,
    load,
    new_database,
    runner,
    sql,
)

pytestmark = pytest.mark.slow

ITEMS, NOTES = "sophia/items_cdc", "sophia/notes_cdc"
TABLES_DDL = (
    "CREATE TABLE public.items (id bigint PRIMARY KEY, title text, body text)",
    # numeric(6,2): equal values print the same, so the key's text is the value's
    "CREATE TABLE public.notes (price numeric(6,2), name text, title text, body text, "
    "PRIMARY KEY (price, name))",
)
IDS = st.integers(1, 25)
# keys whose byte order, collation order and numeric order disagree
NOTE_KEYS = st.tuples(
    st.sampled_from(["0.50", "1.00", "9.99", "10.00", "100.25"]),
    st.sampled_from(["a", "B", "é", "z z", "'q", '"', "", "ß", "10", "9"]),
)
BIG = "big"  # a body of 8 kB random hex: stored out of line (TOAST), incompressible


@dataclass(frozen=True)
class Op:
    table: str  # items or notes
    kind: str  # insert, retitle, rebody, rekey, delete
    key: tuple
    new_key: tuple
    big: bool


def _ops(table: str, keys) -> st.SearchStrategy[Op]:
    return st.builds(
        Op,
        st.just(table),
        st.sampled_from(["insert", "insert", "retitle", "rebody", "rekey", "delete"]),
        keys,
        keys,
        st.booleans(),
    )


OPS = st.one_of(_ops("items", IDS.map(lambda i: (i,))), _ops("notes", NOTE_KEYS))
WORKLOADS = st.lists(st.lists(OPS, min_size=1, max_size=6), min_size=5, max_size=30)


def _apply(cur, op: Op, serial: int) -> None:
    key_columns = ("id",) if op.table == "items" else ("price", "name")
    match = " AND ".join(f"{c} = %s" for c in key_columns)
    body = os.urandom(4_000).hex() if op.big else f"body {serial}"
    if op.kind == "insert":
        columns = ", ".join(key_columns)
        cur.execute(
            f"INSERT INTO {op.table} ({columns}, title, body) VALUES "
            f"({', '.join('%s' for _ in key_columns)}, %s, %s) "
            f"ON CONFLICT ({columns}) DO UPDATE SET body = EXCLUDED.body",
            (*op.key, f"t{serial}", body),
        )
    elif op.kind == "retitle":  # the TOASTed body is unchanged: pgoutput leaves it out
        cur.execute(f"UPDATE {op.table} SET title = %s WHERE {match}", (f"t{serial}", *op.key))
    elif op.kind == "rebody":
        cur.execute(f"UPDATE {op.table} SET body = %s WHERE {match}", (body, *op.key))
    elif op.kind == "rekey":
        assignments = ", ".join(f"{c} = %s" for c in key_columns)
        cur.execute(
            f"UPDATE {op.table} SET {assignments} WHERE {match} AND NOT EXISTS "
            f"(SELECT 1 FROM {op.table} WHERE {match})",
            (*op.new_key, *op.key, *op.new_key),
        )
    else:
        cur.execute(f"DELETE FROM {op.table} WHERE {match}", op.key)


def _table(url: str, table: str) -> dict:
    key = "id" if table == "items" else "price::text, name"
    width = 1 if table == "items" else 2
    rows = sql(url, f"SELECT {key}, title, body FROM {table}")
    return {tuple(row[:width]): tuple(row[width:]) for row in rows}


def _reduced(url: str, collection: str) -> dict:
    key = ("id",) if collection == ITEMS else ("price", "name")
    rows = sql(url, "SELECT document FROM flow.reduced WHERE collection = %s", params=(collection,))
    return {tuple(d[k] for k in key): (d.get("title"), d.get("body")) for (d,) in rows}


def _catalog(root: Path) -> Path:
    specs = catalog_copy(root, chunk_size=3)
    text = {"type": ["string", "null"]}
    add_collection(
        specs,
        ITEMS,
        ["/id"],
        {"id": {"type": "integer"}, "title": text, "body": text},
        stream="items",
        only=True,
    )
    add_collection(
        specs,
        NOTES,
        ["/price", "/name"],
        {"price": {"type": "string"}, "name": {"type": "string"}, "title": text, "body": text},
        stream="notes",
        only=False,
    )
    return specs


def _wait_streaming(url: str, process) -> None:
    """Until serve holds its slot (or has exited): the next transactions race its backfill."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            while process.poll() is None:
                cur.execute(
                    "SELECT pg_sleep(0.02), EXISTS (SELECT 1 FROM pg_replication_slots "
                    "WHERE slot_name = 'flow_slot' AND active)"
                )
                if cur.fetchone()[1]:
                    return
    finally:
        conn.close()


@settings(
    max_examples=int(os.environ.get("SOPHIA_WORKLOAD_EXAMPLES", "5")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    workload=WORKLOADS,
    seeded=st.lists(OPS.filter(lambda op: op.kind == "insert"), max_size=20),
    kills=st.sets(st.integers(0, 29), max_size=3),
    # 3: nearly every transaction is journaled in parts (limits.py), each part a checkpoint
    batch=st.sampled_from(["3", "20000"]),
)
def test_any_workload_killed_anywhere_ends_equal_and_journaled_once(
    postgres_url: str, workload: list[list[Op]], seeded: list[Op], kills: set[int], batch: str
) -> None:
    limits = {"SOPHIA_FLOW_BATCH_DOCUMENTS": batch}
    url = new_database(postgres_url)
    with tempfile.TemporaryDirectory() as root:
        try:
            specs = _catalog(Path(root))
            sql(url, *TABLES_DDL)
            conn = psycopg2.connect(url)
            with conn.cursor() as cur:  # rows there before the capture: a backfill to race
                for serial, op in enumerate(seeded):
                    _apply(cur, op, -serial)
            conn.commit()
            process = flow_process(url, specs, env=limits)
            _wait_streaming(url, process)
            for index, transaction in enumerate(workload):
                with conn.cursor() as cur:
                    for serial, op in enumerate(transaction):
                        _apply(cur, op, index * 10 + serial)
                conn.commit()
                if index in kills:
                    process.send_signal(signal.SIGKILL)
                    process.communicate()
                    process = flow_process(url, specs, env=limits)
                    _wait_streaming(url, process)
            process.send_signal(signal.SIGKILL)
            _, err = process.communicate()
            conn.close()
            assert "died" not in err, err[-2000:]

            runner(url, load(specs)).drain()
            assert _reduced(url, ITEMS) == _table(url, "items")
            assert _reduced(url, NOTES) == _table(url, "notes")
            assert duplicated_changes(url, ITEMS) == []
            assert duplicated_changes(url, NOTES) == []
        finally:
            drop_database(url)
