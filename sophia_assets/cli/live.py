"""The live path of `sophia flow serve`: beside the captures, one continuous task per embedding
derivation (its model loaded once) and one per vector index the catalog materializes, on the
backends the resources configure (pgvector locally, Pinecone when SOPHIA_PINECONE_HOST is
set). Each takes its task's lease, so a Dagster run of the same asset waits for a handover
instead of writing beside it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sophia_assets.embedding.derivation import EmbedReport
from sophia_assets.embedding.index_sync import SyncReport
from sophia_assets.flow.continuous import ContinuousTask

# A task's batch committed: (task, source documents read, the task's report).
OnBatch = Callable[[str, int, "EmbedReport | SyncReport"], None]


@dataclass
class LiveTask:
    task: ContinuousTask
    prepare: Callable[[], object]  # loads what the task needs before it serves (the model)
    report: EmbedReport | SyncReport  # what it has done, kept for the process's life
    source: str  # the collection it reads
    writes: tuple[str, ...] = ()  # the collections it journals into

    def serve(self, stop: threading.Event) -> None:
        self.prepare()
        self.task.serve(stop)


def batch_cap() -> int:
    """SOPHIA_LIVE_BATCH_DOCUMENTS: the most source documents one micro-batch embeds (256).
    A batch is what has committed since the last, so it stays small at low rates; the cap
    bounds memory and how long a run waits for the hand-over."""
    from sophia_assets.embedding.derivation import BATCH_DOCUMENTS

    return int(os.environ.get("SOPHIA_LIVE_BATCH_DOCUMENTS", BATCH_DOCUMENTS))


def live_tasks(on_batch: OnBatch) -> list[LiveTask]:
    """The derivations and index materializations of the catalog, as continuous tasks."""
    from resources.embedder import EmbedderResource
    from resources.postgres import PostgresResource
    from resources.vector_index import configured_index
    from sophia_assets.catalog import load_catalog
    from sophia_assets.embedding.derivation import VectorUpdates
    from sophia_assets.embedding.index_sync import IndexSync
    from sophia_assets.home import flow_specs_dir

    catalog = load_catalog(flow_specs_dir())
    postgres = PostgresResource()
    url = postgres.url()
    embedder = EmbedderResource()
    tasks = []
    for collection in catalog.embedding_derivations():
        derivation = VectorUpdates(catalog, collection.name, url, embedder.load, batch_cap())
        embedded = EmbedReport()
        tasks.append(
            LiveTask(
                ContinuousTask(
                    derivation.task,
                    derivation.source.name,
                    lambda conn, lease, d=derivation, r=embedded: d.step(conn, lease, r),
                    url,
                    on_batch=lambda task, n, r=embedded: on_batch(task, n, r),
                ),
                derivation.embedder,
                embedded,
                derivation.source.name,
                (collection.name,),
            )
        )
    index = configured_index(postgres)
    derived = {c.name for c in catalog.embedding_derivations()}
    for materialization, binding in catalog.vector_index_bindings():
        if binding.source not in derived:
            continue
        sync = IndexSync(index.open(materialization.index_name(binding)), binding.source)
        applied = SyncReport()
        tasks.append(
            LiveTask(
                ContinuousTask(
                    sync.task,
                    binding.source,
                    lambda conn, lease, s=sync, r=applied: s.step(conn, lease, r),
                    url,
                    on_batch=lambda task, n, r=applied: on_batch(task, n, r),
                ),
                lambda: None,
                applied,
                binding.source,
            )
        )
    return tasks
