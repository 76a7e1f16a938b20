"""The capture's view of the source database: preflight checks, the publication, the slot,
the watermarks table, and the tables being captured.

Every refusal says what is wrong and how to fix it. Names (schemas, tables, columns, the
publication) reach SQL only as `psycopg2.sql.Identifier`s, whatever characters they hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg2 import sql

from sophia_assets.flow.values import Converter, converter


class SourceError(RuntimeError):
    """The source cannot be captured as it is; the message says how to fix it."""


@dataclass(frozen=True)
class SourceTable:
    namespace: str
    name: str
    columns: tuple[str, ...]
    type_oids: tuple[int, ...]
    key_columns: tuple[str, ...]

    @property
    def qualified(self) -> str:
        return f"{self.namespace}.{self.name}"

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.namespace, self.name)

    def converters(self) -> tuple[Converter, ...]:
        return tuple(converter(oid) for oid in self.type_oids)


def check_wal_level(cur) -> None:
    cur.execute("SHOW wal_level")
    (level,) = cur.fetchone()
    if level != "logical":
        raise SourceError(
            f"wal_level is {level!r}; change-data-capture needs logical decoding: run "
            "`ALTER SYSTEM SET wal_level = logical` and restart the server"
        )


def describe_table(cur, namespace: str, name: str, key_columns: tuple[str, ...]) -> SourceTable:
    """Columns and types of a table to capture; refuses one whose changes cannot be keyed."""
    cur.execute(
        "SELECT c.oid, c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = "
        "c.relnamespace WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (namespace, name),
    )
    row = cur.fetchone()
    if row is None:
        raise SourceError(
            f"table {namespace}.{name} named in the capture does not exist; create it "
            "(for the demo: `sophia demo seed`) or remove its binding from flow_specs/"
        )
    relid, identity = row
    cur.execute(
        "SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        (relid,),
    )
    columns = cur.fetchall()
    cur.execute("SELECT 1 FROM pg_index WHERE indrelid = %s AND indisprimary", (relid,))
    has_primary_key = cur.fetchone() is not None
    if identity == "n" or (identity == "d" and not has_primary_key):
        raise SourceError(
            f"table {namespace}.{name} has no primary key and no replica identity, so its "
            "updates and deletes cannot be captured; add a primary key, or run "
            f"`ALTER TABLE {namespace}.{name} REPLICA IDENTITY FULL`"
        )
    names = tuple(c for c, _ in columns)
    missing = [k for k in key_columns if k not in names]
    if missing:
        raise SourceError(
            f"table {namespace}.{name} has no column {missing[0]!r}, which the collection key "
            "names; fix the collection's key or the table"
        )
    return SourceTable(namespace, name, names, tuple(t for _, t in columns), key_columns)


def relation(qualified: str) -> tuple[str, str]:
    """`schema.table` as flow_specs writes it (the watermarks table): split at the first dot."""
    schema, dot, name = qualified.partition(".")
    if not dot or not schema or not name:
        raise SourceError(
            f"{qualified!r} is not schema.table; name the watermarks table with its schema, "
            "e.g. public.flow_watermarks"
        )
    return schema, name


def exists(cur, table: tuple[str, str]) -> bool:
    cur.execute(
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        table,
    )
    return cur.fetchone() is not None


def ensure_watermarks_table(cur, qualified: str) -> None:
    """Creates it if missing. Concurrent `CREATE TABLE IF NOT EXISTS` can still fail on the
    catalog's unique indexes, so creators take an advisory lock first (one transaction, also
    on an autocommit cursor). An existing table is left alone without any DDL: a
    least-privilege capture role may not create tables (`sophia db roles` made it)."""
    table = relation(qualified)
    if exists(cur, table):
        return
    cur.execute(
        sql.SQL(
            "BEGIN; SELECT pg_advisory_xact_lock(hashtext('flow.watermarks')); "
            "CREATE TABLE IF NOT EXISTS {} (slot text PRIMARY KEY, watermark text NOT NULL); "
            "COMMIT;"
        ).format(sql.Identifier(*table))
    )


def ensure_publication(cur, publication: str, tables: list[tuple[str, str]]) -> None:
    """Creates the publication, or adds the (schema, table)s it lacks."""
    name = sql.Identifier(publication)
    cur.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,))
    if cur.fetchone() is None:
        listed = sql.SQL(", ").join(sql.Identifier(*t) for t in tables)
        cur.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(name, listed))
        return
    cur.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
        (publication,),
    )
    present = {tuple(row) for row in cur.fetchall()}
    for table in tables:
        if tuple(table) not in present:
            cur.execute(
                sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(name, sql.Identifier(*table))
            )


def slot_status(cur, slot: str) -> tuple[str | None, str | None]:
    """(confirmed_flush_lsn, why it is unusable) or (None, None) when the slot is missing."""
    cur.execute(
        "SELECT confirmed_flush_lsn::text, wal_status, invalidation_reason, database, plugin "
        "FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    )
    row = cur.fetchone()
    if row is None:
        return None, None
    confirmed, wal_status, reason, database, plugin = row
    cur.execute("SELECT current_database()")
    if plugin != "pgoutput" or database != cur.fetchone()[0]:
        return confirmed, f"it is not a pgoutput slot of this database ({plugin}, {database})"
    if wal_status == "lost" or reason:
        return confirmed, f"it was invalidated ({reason or 'required WAL removed'})"
    return confirmed, None


def create_slot(cur, slot: str) -> str:
    cur.execute("SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    return cur.fetchone()[0]


def drop_slot(cur, slot: str) -> None:
    cur.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    )
