"""Names built to break out of SQL quoting (schema, table, columns, publication, watermarks
table) are captured faithfully, and none of them runs as a statement."""

from __future__ import annotations

from pathlib import Path

import psycopg2
import pytest
import yaml
from psycopg2 import sql as pgsql

from sophia_assets.flow.bindings import capture_settings
from sophia_assets.flow.source import SourceError
from tests.support.cdc import CAPTURE, catalog_copy, drop_database, load, new_database, runner

SCHEMA = 'Odd "Schema"; DROP TABLE victims; --'  # no dot: schema.table splits at the first
TABLE = 'Ta"ble; DROP TABLE public.victims; --'
COLUMN = 'co"l); DROP TABLE public.victims; --'
KEY = 'I"d'  # the key column too: it reaches the backfill's ORDER BY and WHERE
PUBLICATION = 'Pub "lication", flow_publication'  # a comma: pgoutput's list separator
WATERMARKS = 'Water"marks; DROP TABLE public.victims; --'


def execute(url: str, statement, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params or None)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def hostile_catalog(tmp_path: Path) -> Path:
    root = catalog_copy(tmp_path, chunk_size=2, slot="hostile_slot")  # several chunks
    path = root / "source-postgres.flow.yaml"
    doc = yaml.safe_load(path.read_text())
    capture = doc["captures"][CAPTURE]
    advanced = capture["endpoint"]["connector"]["config"]["advanced"]
    advanced["publicationName"] = PUBLICATION
    advanced["watermarksTable"] = f"{SCHEMA}.{WATERMARKS}"
    capture["bindings"][0]["resource"] |= {"namespace": SCHEMA, "stream": TABLE}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    collections = root / "collections.flow.yaml"
    doc = yaml.safe_load(collections.read_text())
    doc["collections"]["sophia/postgresql_cdc"]["key"] = ['/I"d']
    collections.write_text(yaml.safe_dump(doc, sort_keys=False))
    schema = root / "schemas" / "postgresql_cdc.schema.yaml"
    doc = yaml.safe_load(schema.read_text())
    doc["required"] = [KEY]
    doc["properties"][KEY] = {"type": "integer"}
    schema.write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


def test_hostile_names_are_captured_and_never_run(postgres_url: str, tmp_path: Path) -> None:
    url = new_database(postgres_url)
    table = pgsql.Identifier(SCHEMA, TABLE)
    try:
        execute(url, "CREATE TABLE public.victims (id int)")
        execute(url, pgsql.SQL("CREATE SCHEMA {}").format(pgsql.Identifier(SCHEMA)))
        execute(
            url,
            pgsql.SQL("CREATE TABLE {} ({} bigint PRIMARY KEY, {} text)").format(
                table, pgsql.Identifier(KEY), pgsql.Identifier(COLUMN)
            ),
        )
        insert = pgsql.SQL("INSERT INTO {} VALUES (%s, %s)").format(table)
        for n in range(1, 6):
            execute(url, insert, (n, f"row {n}'); DROP TABLE public.victims; --"))
        catalog = load(hostile_catalog(tmp_path))

        runner(url, catalog).drain()  # backfill, in chunks of two
        execute(url, insert, (6, "streamed"))
        execute(
            url,
            pgsql.SQL("UPDATE {} SET {} = %s WHERE {} = 2").format(
                table, pgsql.Identifier(COLUMN), pgsql.Identifier(KEY)
            ),
            ("changed",),
        )
        runner(url, catalog).drain()  # streamed through the publication

        reduced = execute(
            url,
            "SELECT document FROM flow.reduced WHERE collection = 'sophia/postgresql_cdc'",
        )
        by_key = {doc[KEY]: doc for (doc,) in reduced}
        assert sorted(by_key) == [1, 2, 3, 4, 5, 6]
        assert by_key[2][COLUMN] == "changed" and by_key[6][COLUMN] == "streamed"
        assert by_key[1][COLUMN] == "row 1'); DROP TABLE public.victims; --"
        assert by_key[1]["_meta"]["source"]["schema"] == SCHEMA
        assert by_key[1]["_meta"]["source"]["table"] == TABLE
        assert execute(url, "SELECT to_regclass('public.victims') IS NOT NULL") == [(True,)]
        published = execute(
            url, "SELECT tablename FROM pg_publication_tables WHERE pubname = %s", (PUBLICATION,)
        )
        assert sorted(t for (t,) in published) == sorted([TABLE, WATERMARKS])
    finally:
        drop_database(url)


@pytest.mark.parametrize("slot", ["Flow_Slot", "flow-slot", 'flow"slot', "x" * 64, ""])
def test_a_slot_name_postgres_would_refuse_is_refused_with_the_rule(
    slot: str, tmp_path: Path
) -> None:
    catalog = load(catalog_copy(tmp_path, slot=slot))
    with pytest.raises(SourceError, match="lower-case letters, digits and underscores"):
        capture_settings(catalog.captures[CAPTURE])


def test_a_watermarks_table_without_a_schema_is_refused(tmp_path: Path) -> None:
    from sophia_assets.flow.source import relation

    with pytest.raises(SourceError, match="schema.table"):
        relation("flow_watermarks")
    assert relation('a.b"c.d') == ("a", 'b"c.d')
