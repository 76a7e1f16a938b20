"""Keys that do not sort like bytes: changes racing a chunked backfill of tables keyed by
numeric, citext, inet, uuid, an enum, a domain, collated text and a composite key are never
dropped. The backfill reads in the database's order and the capture compares every change's
key in that same order (flow/key_order.py); where the two disagreed, a change to a key the
backfill had passed (numeric 9 after 10 as text) was taken for one beyond the chunk and lost.
"""

from __future__ import annotations

import random
import threading
import uuid
from pathlib import Path

import psycopg2
import pytest

from tests.support.cdc import (
    add_collection,
    catalog_copy,
    drop_database,
    load,
    new_database,
    runner,
    sql,
)

pytestmark = pytest.mark.slow

COLLECTION = "sophia/keyed_cdc"
# type name -> (column DDL, set-up statements, SQL literals of keys in no particular order)
LABELS = [f"m{n:02d}" for n in random.Random(7).sample(range(20), 20)]  # an enum's order
WORDS = ["b", "A", "a", "B", "é", "e", "Z", "z", "10", "9", " x", "Ä", "ab", "Ab", "_", "zz"]
KEY_TYPES: dict[str, tuple[str, list[str], list[str]]] = {
    "numeric": (
        "k numeric PRIMARY KEY",
        [],
        [str(n) for n in range(1, 25)] + ["2.5", "10.25", "-1", "1e3", "'NaN'"],
    ),
    "citext": (
        "k citext PRIMARY KEY",
        ["CREATE EXTENSION IF NOT EXISTS citext"],
        [f"'{w}{n}'" for n, w in enumerate(["b", "A", "c", "B", "a", "Zed", "zz", "_x", "Ä"] * 2)],
    ),
    "inet": (
        "k inet PRIMARY KEY",
        [],
        [f"'{n % 11}.{n}.0.{n * 7 % 13}'" for n in range(1, 20)] + ["'::1'", "'10.1.0.0/16'"],
    ),
    "uuid": (
        "k uuid PRIMARY KEY",
        [],
        [f"'{uuid.UUID(int=random.Random(n).getrandbits(128))}'" for n in range(24)],
    ),
    "enum": (
        "k mood PRIMARY KEY",
        ["CREATE TYPE mood AS ENUM (" + ", ".join(f"'{label}'" for label in LABELS) + ")"],
        [f"'{label}'" for label in LABELS],
    ),
    "domain": (
        "k small PRIMARY KEY",
        ["CREATE DOMAIN small AS integer CHECK (VALUE >= 0)"],
        [str(n) for n in range(0, 25)],
    ),
    "collated text": (
        'k text COLLATE "pg_unicode_fast" PRIMARY KEY',
        [],
        [f"'{w}'" for w in WORDS],
    ),
    "composite": (
        "a int, b text, PRIMARY KEY (b, a)",
        [],
        [f"({n}, '{w}')" for n in (1, 2, 9, 10) for w in ("x", "X", "y", "")],
    ),
}


def _catalog(tmp_path: Path, composite: bool) -> Path:
    """The shipped catalog, its capture bound to public.keyed only, chunks of two rows."""
    root = catalog_copy(tmp_path, chunk_size=2)
    keys = ["/b", "/a"] if composite else ["/k"]
    properties = (
        {"a": {"type": "integer"}, "b": {"type": "string"}}
        if composite
        else {"k": {"type": "string"}}
    )
    properties = {**properties, "v": {"type": ["string", "null"]}}
    add_collection(root, COLLECTION, keys, properties, stream="keyed", only=True)
    return root


class Racer(threading.Thread):
    """Updates, deletes and re-inserts random keys until told to stop, one transaction each."""

    def __init__(self, url: str, where: list[str], inserts: list[str], seed: int):
        super().__init__(daemon=True)
        self.url, self.where, self.inserts = url, where, inserts
        self.rng = random.Random(seed)
        self.halt = threading.Event()
        self.changes = 0

    def run(self) -> None:
        conn = psycopg2.connect(self.url)
        conn.autocommit = True
        with conn.cursor() as cur:
            while not self.halt.is_set():
                n = self.rng.randrange(len(self.where))
                if self.rng.random() < 0.8:
                    cur.execute(
                        f"UPDATE keyed SET v = %s WHERE {self.where[n]}", (f"v{self.changes}",)
                    )
                else:
                    cur.execute(f"DELETE FROM keyed WHERE {self.where[n]}")
                    cur.execute(self.inserts[n], (f"back{self.changes}",))
                self.changes += 1
        conn.close()


@pytest.mark.parametrize("kind", sorted(KEY_TYPES))
def test_changes_racing_a_chunked_backfill_are_never_dropped(
    kind: str, postgres_url: str, tmp_path: Path
) -> None:
    column, setup, literals = KEY_TYPES[kind]
    composite = kind == "composite"
    url = new_database(postgres_url)
    try:
        if composite:
            where = [f"(a, b) = {lit}" for lit in literals]
            inserts = [f"INSERT INTO keyed (a, b, v) VALUES ({lit[1:-1]}, %s)" for lit in literals]
        else:
            where = [f"k = {lit}" for lit in literals]
            inserts = [f"INSERT INTO keyed (k, v) VALUES ({lit}, %s)" for lit in literals]
        sql(url, *setup, f"CREATE TABLE public.keyed ({column}, v text)")
        for statement in inserts:
            sql(url, statement, params=("v0",))
        catalog = load(_catalog(tmp_path, composite))
        changes = 0
        for rebackfill in (False, True, True):  # the first backfill, then two from scratch
            changes += _raced_backfill(url, catalog, where, inserts, rebackfill)
            runner(url, catalog).drain()  # what the racer did after, now settled
            assert _reduced(url, composite) == _table(url, composite)
        assert changes > 20
    finally:
        drop_database(url)


def _raced_backfill(url: str, catalog, where, inserts, rebackfill: bool) -> int:
    """A drain whose backfill a racer changes rows under, until half the table is read:
    what it changed among the keys already read must come through, since nothing later
    reads those rows again."""
    racer = Racer(url, where, inserts, seed=len(where) + rebackfill)
    half = len(where) // 2

    def on_batch(report) -> None:
        if report.backfilled_rows >= half:
            racer.halt.set()

    capture = runner(url, catalog, on_batch=on_batch)
    if rebackfill:
        capture.reset_for_rebackfill()
    racer.start()
    try:
        capture.drain()
    finally:
        racer.halt.set()
        racer.join()
    return racer.changes


def _reduced(url: str, composite: bool) -> dict:
    rows = sql(url, "SELECT document FROM flow.reduced WHERE collection = %s", params=(COLLECTION,))
    if composite:
        return {(doc["a"], doc["b"]): doc["v"] for (doc,) in rows}
    return {doc["k"]: doc["v"] for (doc,) in rows}


def _table(url: str, composite: bool) -> dict:
    if composite:
        return {(a, b): v for a, b, v in sql(url, "SELECT a, b, v FROM keyed")}
    return dict(sql(url, "SELECT concat(k), v FROM keyed"))  # k as its output function writes it
