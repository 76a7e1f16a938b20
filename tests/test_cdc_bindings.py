"""Several bindings in one capture: transactions that change rows of two tables, with the same
key values in both, keep each collection's reduced view equal to its own table."""

from __future__ import annotations

from pathlib import Path

from tests.support.cdc import (
    add_collection,
    catalog_copy,
    drop_database,
    load,
    new_database,
    runner,
    sql,
)

COMMENTS = "sophia/comments_cdc"


def two_binding_catalog(tmp_path: Path) -> Path:
    root = catalog_copy(tmp_path, chunk_size=3)
    properties = {"id": {"type": "integer"}, "text": {"type": "string"}}
    add_collection(root, COMMENTS, ["/id"], properties, stream="comments", only=False)
    return root


def reduced(url: str, collection: str) -> dict[int, str | None]:
    rows = sql(url, "SELECT document FROM flow.reduced WHERE collection = %s", params=(collection,))
    field = "title" if collection == "sophia/postgresql_cdc" else "text"
    return {doc["id"]: doc.get(field) for (doc,) in rows}


def table(url: str, name: str, column: str) -> dict[int, str | None]:
    return dict(sql(url, f"SELECT id, {column} FROM public.{name}"))


def test_each_collection_keeps_its_own_table(postgres_url: str, tmp_path: Path) -> None:
    url = new_database(postgres_url)
    try:
        sql(
            url,
            "CREATE TABLE public.documents (id bigint PRIMARY KEY, title text, body text, "
            "updated_at timestamptz NOT NULL DEFAULT now())",
            "CREATE TABLE public.comments (id bigint PRIMARY KEY, text text)",
            "INSERT INTO public.documents (id, title, body) SELECT n, 'doc ' || n, 'body' "
            "FROM generate_series(1, 10) n",
            "INSERT INTO public.comments SELECT n, 'comment ' || n FROM generate_series(1, 10) n",
        )
        catalog = load(two_binding_catalog(tmp_path))
        runner(url, catalog).drain()
        # One transaction over both tables, the same keys in each: updates, deletes, inserts.
        sql(
            url,
            "UPDATE public.documents SET title = 'doc ' || id || ' v2' WHERE id <= 6",
            "UPDATE public.comments SET text = 'comment ' || id || ' v2' WHERE id <= 6",
            "DELETE FROM public.documents WHERE id = 7",
            "DELETE FROM public.comments WHERE id = 8",
            "INSERT INTO public.documents (id, title, body) VALUES (11, 'doc 11', 'body')",
            "INSERT INTO public.comments VALUES (11, 'comment 11'), (12, 'comment 12')",
        )
        runner(url, catalog).drain()
        sql(
            url,
            "UPDATE public.comments SET text = 'comment 1 v3' WHERE id = 1",
            "UPDATE public.documents SET title = 'doc 1 v3' WHERE id = 1",
        )
        runner(url, catalog).drain()
        # Different keys in each table: neither collection may receive the other's rows.
        sql(
            url,
            "UPDATE public.documents SET title = 'doc 2 v3' WHERE id = 2",
            "UPDATE public.comments SET text = 'comment 3 v3' WHERE id = 3",
        )
        runner(url, catalog).drain()

        assert reduced(url, "sophia/postgresql_cdc") == table(url, "documents", "title")
        assert reduced(url, COMMENTS) == table(url, "comments", "text")
        assert sql(url, "SELECT count(*) FROM flow.quarantine") == [(0,)]
    finally:
        drop_database(url)
