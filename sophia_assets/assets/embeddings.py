"""`sophia/vector_updates` (embedding) and `pinecone/sophia-ai-vectors` (the index) as assets."""

from contextlib import ExitStack

import dagster as dg

from resources.embedder import EmbedderResource
from resources.gpu_runner import GpuRunner
from resources.postgres import PostgresResource
from resources.vector_index import VectorIndexResource
from sophia_assets.catalog.model import Catalog

RUNNER_TAG = "sophia/runner"  # `gpu`: embed through the configured GPU runner


def vector_updates_asset(
    catalog: Catalog, spec: dg.AssetSpec, code_version: str
) -> dg.AssetsDefinition:
    """Embeds what changed in the source collection since the last run. The code version is
    the model's name and weights digest, so a new model shows as stale in the UI."""
    collection = "/".join(spec.key.path)

    @dg.multi_asset(
        name="embed__" + "__".join(spec.key.path),
        specs=[spec.replace_attributes(code_version=code_version)],
    )
    def _embed(
        context: dg.AssetExecutionContext,
        embedder: EmbedderResource,
        postgres: PostgresResource,
        gpu_runner: GpuRunner,
    ):
        from sophia_assets.embedding.derivation import VectorUpdates

        remote = []  # the GPU runner's embedder, opened on the first batch (if any)
        local = []  # or the in-process embedder, loaded on the first batch (if any)
        stack = ExitStack()
        if context.run.tags.get(RUNNER_TAG) == "gpu":
            if embedder.precision != "fp32":
                raise dg.Failure(
                    f"embedder precision {embedder.precision} runs on the CPU's ONNX backend; a "
                    f"{RUNNER_TAG}=gpu run embeds with torch, whose vectors differ. Run without "
                    "the tag, or set the embedder's precision to fp32 (which re-embeds)."
                )
            context.log.info(
                f"tagged {RUNNER_TAG}=gpu: embedding through {type(gpu_runner).__name__}"
            )

            def factory():
                remote.append(stack.enter_context(gpu_runner.session(context, embedder.card())))
                return remote[0]

            derivation = VectorUpdates(
                catalog, collection, postgres.url(), factory, gpu_runner.batch_documents
            )
        else:

            def load():
                local.append(embedder.load())
                return local[0]

            derivation = VectorUpdates(catalog, collection, postgres.url(), load)

        def progress(report) -> None:
            context.log.info(
                f"source offset {report.source_offset}: {report.embedded_documents} documents "
                f"embedded ({report.chunks_embedded} chunks), {report.unchanged_documents} "
                f"unchanged, {report.tombstones} tombstones"
            )

        with stack:
            report = derivation.run(on_batch=progress)
        figures = report.collections.get(collection)
        rate = report.embedded_documents / report.seconds if report.seconds else 0.0
        metadata = {
            "source_offset": report.source_offset,
            "source_documents": report.source_documents,
            "embedded_documents": report.embedded_documents,
            "unchanged_documents": report.unchanged_documents,
            "chunks_embedded": report.chunks_embedded,
            "tombstones": report.tombstones,
            "vector_documents": figures.documents if figures else 0,
            "documents_per_s": round(rate, 2),
            "model": code_version,
        }
        if local:
            metadata["backend"] = local[0].backend
            metadata["device"] = local[0].device
            metadata["load_s"] = round(local[0].load_seconds, 3)
            if local[0].fallback:
                metadata["backend_fallback"] = local[0].fallback
        if remote:
            metadata.update(remote[0].summary())
            metadata.update(remote[0].metadata)
        if figures and figures.first_offset is not None:
            metadata["first_offset"] = figures.first_offset
            metadata["last_offset"] = figures.last_offset
        yield dg.MaterializeResult(asset_key=spec.key, metadata=metadata)

    return _embed


def vector_index_asset(spec: dg.AssetSpec, source: str, index_name: str) -> dg.AssetsDefinition:
    """Applies the vector updates of `source`, in journal order, to index `index_name` on the
    configured backend."""

    @dg.multi_asset(name="index__" + "__".join(spec.key.path).replace("-", "_"), specs=[spec])
    def _index(
        context: dg.AssetExecutionContext,
        vector_index: VectorIndexResource,
        postgres: PostgresResource,
    ):
        from sophia_assets.embedding.index_sync import sync_index

        index = vector_index.open(index_name)
        report = sync_index(
            index,
            postgres.url(),
            source,
            on_batch=lambda r: context.log.info(
                f"applied up to offset {r.applied_offset}: {r.upserts} upserts, {r.deletes} deletes"
            ),
        )
        stats = index.stats()
        yield dg.MaterializeResult(
            asset_key=spec.key,
            metadata={
                "vectors": stats.vectors,
                "applied_offset": report.applied_offset,
                "upserts": report.upserts,
                "deletes": report.deletes,
                "quarantined": report.quarantined,
                "lag_documents": report.lag_documents,
                "lag_seconds": report.lag_seconds or 0.0,
                "backend": type(index).__name__,
            },
        )

    return _index
