"""A primary-key change (`UPDATE ... SET id = 1001 WHERE id = 1`) is, as in Estuary's
source-postgres, a create of the new key and a delete of the old: the old document leaves the
reduced view, and the new one is whole, TOASTed values the update did not touch included."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from tests.support.cdc import (
    DOCUMENTS_DDL,
    catalog_copy,
    drop_database,
    load,
    new_database,
    runner,
    sql,
)

COLLECTION = "sophia/postgresql_cdc"


def test_a_key_change_is_a_create_and_a_delete(postgres_url: str, tmp_path: Path) -> None:
    url = new_database(postgres_url)
    big = base64.b64encode(os.urandom(30_000)).decode()  # incompressible: stored out of line
    try:
        sql(
            url,
            DOCUMENTS_DDL,
            "INSERT INTO public.documents (id, title, body) VALUES (1, 'one', %s), (2, 'two', 'b')",
            params=(big,),
        )
        catalog = load(catalog_copy(tmp_path))
        runner(url, catalog).drain()
        sql(url, "UPDATE public.documents SET id = 1001 WHERE id = 1")
        sql(url, "UPDATE public.documents SET id = 2002, title = 'two v2' WHERE id = 2")
        runner(url, catalog).drain()

        reduced = sql(
            url, "SELECT document FROM flow.reduced WHERE collection = %s", params=(COLLECTION,)
        )
        by_id = {doc["id"]: doc for (doc,) in reduced}
        assert sorted(by_id) == [1001, 2002]
        assert by_id[1001]["body"] == big and by_id[1001]["title"] == "one"
        assert by_id[2002]["title"] == "two v2"
        streamed = sql(
            url,
            "SELECT document->>'id', document #>> '{_meta,op}' FROM flow.journal "
            "WHERE collection = %s AND document #> '{_meta,source,snapshot}' IS NULL "
            'ORDER BY "offset"',
            params=(COLLECTION,),
        )
        assert streamed == [("1001", "c"), ("1", "d"), ("2002", "c"), ("2", "d")]
    finally:
        drop_database(url)
