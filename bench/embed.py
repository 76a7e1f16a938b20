"""`uv run python -m bench.embed`: our embedding pipeline against raw `SentenceTransformer.encode`.

- raw: `SentenceTransformer.encode` of exactly the texts the model sees in our pipeline
  (documents split into chunks), model loaded beforehand;
- pipeline: read the change journal, embed, write `sophia/vector_updates`, apply to the
  pgvector index (model loaded beforehand; the capture is not part of it);
- incremental: the same pipeline after 1% of the documents changed, as a fraction of the full
  run's time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

from bench.report import add_json_flag, say
from bench.scratch import scratch_capture, scratch_database
from sophia_assets.catalog import Catalog

ENV = "SOPHIA_BENCH_URL"


@dataclass
class EmbedFigures:
    documents: int
    chunks: int
    device: str
    raw_seconds: float
    pipeline_seconds: float
    incremental_documents: int
    incremental_seconds: float

    def as_dict(self) -> dict:
        raw = self.documents / self.raw_seconds
        pipeline = self.documents / self.pipeline_seconds
        return {
            "documents": self.documents,
            "chunks": self.chunks,
            "device": self.device,
            "raw_docs_per_s": round(raw, 2),
            "pipeline_docs_per_s": round(pipeline, 2),
            "ratio": round(pipeline / raw, 3),
            "incremental_documents": self.incremental_documents,
            "incremental_seconds": round(self.incremental_seconds, 3),
            "incremental_fraction": round(self.incremental_seconds / self.pipeline_seconds, 4),
        }


def run_embed_bench(
    platform_url: str, catalog: Catalog, rows: int, corpus, say=print
) -> EmbedFigures:
    import psycopg2
    from sentence_transformers import SentenceTransformer

    from sophia_assets.demo.seed import seed_documents
    from sophia_assets.embedding.derivation import VectorUpdates
    from sophia_assets.embedding.embedder import Embedder, ModelCard, default_model_path
    from sophia_assets.embedding.index_sync import sync_index
    from sophia_assets.flow.capture import CaptureRunner
    from sophia_assets.vectors.pgvector import PgVectorIndex

    card = ModelCard.read(default_model_path())
    embedder = Embedder(card)
    with scratch_database(platform_url, "embed") as url:
        os.environ[ENV] = url
        index = PgVectorIndex(lambda: psycopg2.connect(url))
        seed_documents(url, corpus, rows)
        capture, catalog = scratch_capture(catalog)
        CaptureRunner(capture, catalog, url, url).drain()

        conn = psycopg2.connect(url)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT title, body FROM public.documents ORDER BY id")
            texts = [
                chunk
                for title, body in cur.fetchall()
                for chunk in embedder.chunks(f"{title}\n\n{body}")
            ]
        conn.close()
        say(f"raw: SentenceTransformer.encode of {len(texts)} chunks of {rows} documents...")
        raw_model = SentenceTransformer(str(card.path), device=embedder.device)
        started = time.perf_counter()
        raw_model.encode(texts, batch_size=embedder.batch_size, normalize_embeddings=True)
        raw_seconds = time.perf_counter() - started

        def pipeline() -> float:
            began = time.perf_counter()
            VectorUpdates(catalog, "sophia/vector_updates", url, lambda: embedder).run()
            sync_index(index, url)
            return time.perf_counter() - began

        say("pipeline: journal -> embed -> vector_updates -> pgvector...")
        pipeline_seconds = pipeline()
        changed = max(1, rows // 100)
        conn = psycopg2.connect(url)
        with conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE public.documents SET body = body || ' (revised)' WHERE id <= %s", (changed,)
            )
        conn.close()
        CaptureRunner(capture, catalog, url, url).drain()
        say(f"incremental: {changed} documents changed...")
        incremental_seconds = pipeline()
    return EmbedFigures(
        rows,
        len(texts),
        embedder.device,
        raw_seconds,
        pipeline_seconds,
        changed,
        incremental_seconds,
    )


def print_embed_figures(figures: EmbedFigures, as_json: bool) -> None:
    data = figures.as_dict()
    print(
        f"raw SentenceTransformer.encode: {data['raw_docs_per_s']:>8} documents/s "
        f"({figures.chunks} chunks, {figures.device})"
    )
    print(f"our pipeline:                   {data['pipeline_docs_per_s']:>8} documents/s")
    print(f"ratio (pipeline / raw):         {data['ratio']:>8}")
    print(
        f"incremental after {figures.incremental_documents} changes: "
        f"{data['incremental_seconds']} s = {data['incremental_fraction']:.2%} of the full run"
    )
    if as_json:
        print(json.dumps(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.embed", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000, help="documents (1000)")
    add_json_flag(parser)
    args = parser.parse_args(argv)
    from sophia_assets.catalog import load_catalog
    from sophia_assets.demo.corpus import demo_corpus
    from sophia_assets.home import flow_specs_dir, sophia_home
    from sophia_assets.postgres.embedded_server import postgres_url

    corpus = demo_corpus(sophia_home())
    figures = run_embed_bench(
        postgres_url(), load_catalog(flow_specs_dir()), args.rows, corpus, say=say
    )
    print_embed_figures(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
