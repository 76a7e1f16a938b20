"""Checks on the embeddings and the index: coverage (every live document embedded with the
current model and content), consistency (the index holds exactly the live vector ids), and
the vectors' dimension. Each reports its figures; each fails when its figure is off."""

import dagster as dg
import orjson

from resources.embedder import EmbedderResource
from resources.postgres import PostgresResource
from resources.vector_index import VectorIndexResource
from sophia_assets.catalog.model import Catalog
from sophia_assets.embedding.text_rule import TextRule
from sophia_assets.flow.tasks import derivation_task


def _rows(postgres: PostgresResource, statement: str, params: tuple) -> list[tuple]:
    conn = postgres.connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()
    finally:
        conn.close()


def coverage_check(catalog: Catalog, updates_key: dg.AssetKey) -> dg.AssetChecksDefinition:
    derived = catalog.collections["/".join(updates_key.path)]
    source = derived.derivation.transforms[0].source
    rule = TextRule.of(derived.derivation)
    task = derivation_task(derived.name)

    @dg.asset_check(
        asset=updates_key,
        name="embedding_coverage",
        description="Every live source document has vectors from the current "
        "model and of its current content.",
    )
    def _coverage(postgres: PostgresResource, embedder: EmbedderResource) -> dg.AssetCheckResult:
        model = embedder.card().version
        live = _rows(
            postgres,
            "SELECT key::text, document::text FROM flow.reduced WHERE collection = %s",
            (source,),
        )
        state = {
            k: (h, m)
            for k, h, m in _rows(
                postgres,
                "SELECT source_key, content_hash, model FROM flow.derivation_state "
                "WHERE derivation = %s",
                (task,),
            )
        }
        missing = stale_model = stale_content = 0
        for key_text, document_text in live:
            document = orjson.loads(document_text)
            key = str(orjson.loads(key_text)[0])
            if key not in state:
                missing += 1
            elif state[key][1] != model:
                stale_model += 1
            elif state[key][0] != rule.content_hash(rule.text(document)):
                stale_content += 1
        covered = len(live) - missing - stale_model - stale_content
        return dg.AssetCheckResult(
            passed=covered == len(live),
            metadata={
                "live_documents": len(live),
                "covered": covered,
                "missing": missing,
                "stale_model": stale_model,
                "stale_content": stale_content,
                "coverage": round(covered / len(live), 6) if live else 1.0,
                "model": model,
            },
        )

    return _coverage


def consistency_check(
    index_key: dg.AssetKey, updates: str, index_name: str
) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=index_key,
        name="index_consistency",
        description="The index holds exactly the live vector ids: no orphan left "
        "by a delete, none missing.",
    )
    def _consistency(
        postgres: PostgresResource, vector_index: VectorIndexResource
    ) -> dg.AssetCheckResult:
        live = {
            orjson.loads(k)[0]
            for (k,) in _rows(
                postgres, "SELECT key::text FROM flow.reduced WHERE collection = %s", (updates,)
            )
        }
        indexed = vector_index.open(index_name).ids()
        orphans, missing = indexed - live, live - indexed
        return dg.AssetCheckResult(
            passed=not orphans and not missing,
            metadata={
                "index_vectors": len(indexed),
                "live_vectors": len(live),
                "orphans": len(orphans),
                "missing": len(missing),
                "orphan_sample": ", ".join(sorted(orphans)[:5]),
                "missing_sample": ", ".join(sorted(missing)[:5]),
            },
        )

    return _consistency


def dimension_check(
    index_key: dg.AssetKey, updates: str, index_name: str
) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=index_key,
        name="vector_dimension",
        description="Vectors in the collection and the index have the model's dimension.",
    )
    def _dimension(
        postgres: PostgresResource, embedder: EmbedderResource, vector_index: VectorIndexResource
    ) -> dg.AssetCheckResult:
        expected = embedder.card().dimensions
        lengths = {
            n
            for (n,) in _rows(
                postgres,
                "SELECT DISTINCT json_array_length(document->'vector') FROM flow.reduced "
                "WHERE collection = %s",
                (updates,),
            )
            if n is not None
        }
        index_dimension = vector_index.open(index_name).stats().dimension
        return dg.AssetCheckResult(
            passed=lengths <= {expected} and index_dimension in (None, expected),
            metadata={
                "model_dimension": expected,
                "index_dimension": index_dimension or 0,
                "collection_dimensions": ", ".join(map(str, sorted(lengths))),
            },
        )

    return _dimension
