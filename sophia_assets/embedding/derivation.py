"""`sophia/vector_updates`, derived from `sophia/postgresql_cdc` by embedding.

Each run reads the source journal after its stored offset, keeps the latest change per key,
and embeds only documents whose content changed (a sha256 of the text fields, per key, kept
in `flow.derivation_state` with the model version). It writes one vector document per chunk
(`embedding_id` = source key and chunk number, so a replay overwrites the same ids) and a
tombstone for every chunk a deletion or a shortening left behind. Vectors, state and the
source offset commit in one transaction: a run killed mid-way redoes the batch, nothing more.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fastjsonschema
import orjson
import psycopg2

from sophia_assets.catalog.model import Catalog, Collection
from sophia_assets.embedding.text_rule import TextRule
from sophia_assets.flow import journal, leases
from sophia_assets.flow.bindings import FORMATS, validation_schema
from sophia_assets.flow.documents import Change, derived, is_delete, source_of
from sophia_assets.flow.reduce import Reducer
from sophia_assets.flow.tasks import derivation_task
from sophia_assets.flow.writer import CollectionFigures, write_changes

log = logging.getLogger("sophia.embedding")
BATCH_DOCUMENTS = 256
# Every chunk's vector carries the title in its metadata: uncapped, a megabyte title cut into
# thousands of chunks would be copied into each, memory growing with the square of its size.
TITLE_CHARS = 1_000
TITLE_CUT = " [cut]"


@dataclass
class EmbedReport:
    source_documents: int = 0
    embedded_documents: int = 0
    unchanged_documents: int = 0
    chunks_embedded: int = 0
    tombstones: int = 0
    source_offset: int = -1
    seconds: float = 0.0
    batches: int = 0
    collections: dict[str, CollectionFigures] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """The derived collection, as `write_changes` needs it."""

    collection: Collection
    validate: Any
    reducer: Reducer


@dataclass
class Pending:
    key: str  # source key text, e.g. "42"
    key_value: Any
    document: dict[str, Any]
    deleted: bool
    text: str = ""
    content_hash: str = ""

    @property
    def title(self) -> str:
        """The title for the vectors' metadata, at most TITLE_CHARS (then ending in TITLE_CUT)."""
        title = str(self.document.get("title") or "")
        if len(title) <= TITLE_CHARS:
            return title
        return title[: TITLE_CHARS - len(TITLE_CUT)] + TITLE_CUT


class VectorUpdates:
    def __init__(
        self,
        catalog: Catalog,
        collection: str,
        journal_url: str,
        embedder_factory,
        batch_documents: int = BATCH_DOCUMENTS,
    ):
        derived = catalog.collections[collection]
        if derived.derivation is None:
            raise ValueError(f"collection {collection} has no `derive` in flow_specs/")
        self.derived = derived
        self.source = catalog.collections[derived.derivation.transforms[0].source]
        self.text_rule = TextRule.of(derived.derivation)
        self.task = derivation_task(collection)
        self.journal_url = journal_url
        self.embedder_factory = embedder_factory
        self.batch_documents = batch_documents
        self._embedder = None
        self.target = Target(
            derived,
            fastjsonschema.compile(validation_schema(derived.schema), formats=FORMATS),
            Reducer(derived.schema),
        )

    def run(self, on_batch: Callable[[EmbedReport], None] = lambda report: None) -> EmbedReport:
        """A Dagster run: takes the task's lease (a serving task hands it over between two
        batches), embeds everything after the checkpoint, lets go."""
        report = EmbedReport()
        started = time.perf_counter()
        conn = psycopg2.connect(self.journal_url)
        try:
            journal.ensure_schema(conn)
            if self._pending(conn):
                # Load the model (or boot the GPU runner: minutes) before taking the task
                # over, so a serving task keeps embedding meanwhile.
                self.embedder()
            ttl = leases.ttl_from_environment()
            lease = leases.acquire_for_run(
                conn, self.task, leases.new_owner(leases.RUN), ttl, max(60.0, 4 * ttl)
            )
            try:
                with leases.Heartbeat(self.journal_url, lease):
                    while self.step(conn, lease, report):
                        on_batch(report)
            finally:
                leases.release(conn, lease)
        finally:
            conn.close()
        report.seconds = time.perf_counter() - started
        return report

    def _pending(self, conn) -> bool:
        """Whether the source journal holds anything after the checkpoint."""
        with conn, conn.cursor() as cur:
            checkpoint = journal.load_checkpoint(cur, self.task)
            offset = checkpoint[1]["offset"] if checkpoint else -1
            return bool(list(journal.read(cur, self.source.name, offset + 1, 1)))

    def step(self, conn, lease: leases.Lease, report: EmbedReport) -> int:
        """Embeds the next batch after the checkpoint and commits it fenced by `lease`;
        the number of source documents it read (0: caught up). The checkpoint is read
        afresh each time: another writer may have moved it while this one had no lease."""
        with conn, conn.cursor() as cur:
            checkpoint = journal.load_checkpoint(cur, self.task)
            offset = checkpoint[1]["offset"] if checkpoint else -1
            rows = list(journal.read(cur, self.source.name, offset + 1, self.batch_documents))
            next_offset = journal.next_offset(cur, self.derived.name)
        report.source_offset = max(report.source_offset, offset)
        if not rows:
            return 0
        self._batch(conn, lease, rows, next_offset, self.embedder(), report)
        report.source_offset = rows[-1][0]
        report.batches += 1
        return len(rows)

    def embedder(self):
        """The embedder, made by the factory on first use (a caught-up run loads no model)."""
        if self._embedder is None:
            self._embedder = self.embedder_factory()
        return self._embedder

    def _batch(self, conn, lease, rows, next_offset: int, embedder, report) -> None:
        offset = rows[-1][0]
        latest: dict[str, Pending] = {}
        for _, document in rows:
            key_value = _key_value(document, self.source.key)
            key = str(key_value)
            latest[key] = Pending(key, key_value, document, is_delete(document))
        report.source_documents += len(rows)
        model = embedder.card.version
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT source_key, content_hash, chunks, model FROM "
                "flow.derivation_state WHERE derivation = %s AND source_key = ANY(%s)",
                (self.task, list(latest)),
            )
            state = {k: (h, c, m) for k, h, c, m in cur.fetchall()}
        to_embed: list[Pending] = []
        changes: list[Change] = []
        for item in latest.values():
            previous = state.get(item.key)
            if item.deleted:
                if previous:
                    changes += self._tombstones(item, 0, previous[1])
                continue
            item.text = self.text_rule.text(item.document)
            item.content_hash = self.text_rule.content_hash(item.text)
            if previous and previous[0] == item.content_hash and previous[2] == model:
                report.unchanged_documents += 1
                continue
            to_embed.append(item)
        # Per document, its chunks' vectors: in this process, or through a GPU runner. No
        # transaction is open meanwhile; the lease keeps every other writer out.
        embedded = embedder.embed_documents([item.text for item in to_embed])
        for item, vectors in zip(to_embed, embedded, strict=True):
            changes += [self._vector(item, n, v, model) for n, v in enumerate(vectors)]
            previous = state.get(item.key)
            if previous and previous[1] > len(vectors):
                changes += self._tombstones(item, len(vectors), previous[1])
            report.chunks_embedded += len(vectors)
        report.embedded_documents += len(to_embed)
        report.tombstones += sum(1 for c in changes if c.op == "d")
        counts = {i.key: len(v) for i, v in zip(to_embed, embedded, strict=True)}
        with conn, conn.cursor() as cur:  # commits all of it, or rolls all of it back
            leases.fence(cur, lease)  # first: a writer that lost the lease writes nothing
            if changes:
                write_changes(cur, self.derived.name, changes, next_offset, report)
            self._save_state(cur, latest, to_embed, counts, state, model)
            journal.save_checkpoint(cur, self.task, "0/0", {"offset": offset})
        log.info(
            "%s: source offset %d, %d embedded, %d unchanged, %d tombstones",
            self.task,
            offset,
            report.embedded_documents,
            report.unchanged_documents,
            report.tombstones,
        )

    def _vector(self, item: Pending, chunk: int, vector: list[float], model: str) -> Change:
        ts = source_of(item.document).get("ts_ms")
        document = {
            "embedding_id": f"{item.key}:{chunk}",
            "vector": vector,
            "metadata": {
                "source_key": item.key_value,
                "chunk": chunk,
                "title": item.title,
                "content_hash": item.content_hash,
                "model": model,
                "source_ts_ms": ts,
            },
        }
        derived(document, "c")
        return Change(
            self.target, "c", _key(document["embedding_id"]), document, (), _change_ts(item), 0
        )

    def _tombstones(self, item: Pending, first: int, end: int) -> list[Change]:
        return [
            Change(
                self.target,
                "d",
                _key(f"{item.key}:{n}"),
                derived({"embedding_id": f"{item.key}:{n}"}, "d"),
                (),
                _change_ts(item),
                0,
            )
            for n in range(first, end)
        ]

    def _save_state(self, cur, latest, to_embed, counts, state, model: str) -> None:
        deleted = [item.key for item in latest.values() if item.deleted and item.key in state]
        if deleted:
            cur.execute(
                "DELETE FROM flow.derivation_state WHERE derivation = %s AND source_key = ANY(%s)",
                (self.task, deleted),
            )
        from psycopg2.extras import execute_values

        rows = [
            (self.task, item.key, item.content_hash, counts[item.key], model) for item in to_embed
        ]
        if rows:
            execute_values(
                cur,
                "INSERT INTO flow.derivation_state (derivation, source_key, content_hash, "
                "chunks, model) VALUES %s ON CONFLICT (derivation, source_key) DO UPDATE SET "
                "content_hash = EXCLUDED.content_hash, chunks = EXCLUDED.chunks, "
                "model = EXCLUDED.model",
                rows,
            )


def _change_ts(item: Pending) -> int | None:
    """The source commit time the vector document's journal entry carries: a change's, not a
    backfilled row's (whose `ts_ms` is when it was read), as the capture's journal does; the
    index's commit-to-searchable figures count changes only."""
    source = source_of(item.document)
    return None if source.get("snapshot") else source.get("ts_ms")


def _key(embedding_id: str) -> str:
    return orjson.dumps([embedding_id]).decode()


def _key_value(document: dict[str, Any], key: tuple[str, ...]) -> Any:
    values = [document.get(pointer[1:]) for pointer in key]
    return values[0] if len(values) == 1 else values
