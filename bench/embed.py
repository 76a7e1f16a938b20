"""`uv run python -m bench.embed`: our embedding pipeline against raw `SentenceTransformer.encode`.

- raw: `SentenceTransformer.encode` of exactly the texts the model sees in our pipeline
  (documents split into chunks), model loaded beforehand, at the library's default batch size
  (32), the baseline every ratio is against; and again at our CPU batch size, to tell how much
  of a ratio is the batch size and how much the backend;
- pipeline: read the change journal, embed, write `sophia/vector_updates`, apply to the
  pgvector index (model loaded beforehand; the capture is not part of it);
- incremental: the same pipeline after 1% of the documents changed, as a fraction of the full
  run's time;
- per backend (torch, ONNX fp32, ONNX int8), on the same documents: our embedder's `embed_documents`
  (chunking, length-sorted batches) in documents/s and as a ratio to raw; the min and mean
  cosine of its chunk vectors to raw torch's; recall@5/@10 of held-out probes (one sentence
  taken from each document, searched against an index of the full documents, a document
  scoring its best chunk); and its load time in a fresh process (imports, model, tokenizer).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

from bench.report import add_json_flag, say
from bench.scratch import scratch_capture, scratch_database
from sophia_assets.catalog import Catalog

ENV = "SOPHIA_BENCH_URL"
BACKENDS = {
    "torch": ("torch", "fp32"),
    "onnx_fp32": ("onnx", "fp32"),
    "onnx_int8": ("onnx", "int8"),
}
RAW_BATCH = 32  # SentenceTransformer.encode's default
LOAD_SCRIPT = """
import sys, time
from resources.embedder import guard_documents
from sophia_assets.embedding.embedder import Embedder, ModelCard, default_model_path
card = ModelCard.read(default_model_path()).at_precision(sys.argv[2])
card.weights_digest
embedder = Embedder(card, device="cpu", backend=sys.argv[1], guard_documents=guard_documents)
print(embedder.backend, embedder.load_seconds)
"""


@dataclass
class BackendFigures:
    """Our embedder on one backend, on the same documents as raw encode."""

    seconds: float
    min_cosine: float
    mean_cosine: float
    recall_at_5: float
    recall_at_10: float
    load_seconds: float


@dataclass
class EmbedFigures:
    documents: int
    chunks: int
    device: str
    raw_seconds: float
    raw_small_batch_seconds: float
    pipeline_seconds: float
    incremental_documents: int
    incremental_seconds: float
    pipeline_backend: str = ""
    probes: int = 0
    backends: dict[str, BackendFigures] = field(default_factory=dict)

    def as_dict(self) -> dict:
        raw = self.documents / self.raw_seconds
        pipeline = self.documents / self.pipeline_seconds
        per_backend = {}
        for name, figures in self.backends.items():
            rate = self.documents / figures.seconds
            per_backend |= {
                f"{name}_docs_per_s": round(rate, 2),
                f"{name}_ratio": round(rate / raw, 3),
                f"{name}_min_cosine": round(figures.min_cosine, 6),
                f"{name}_mean_cosine": round(figures.mean_cosine, 6),
                f"{name}_recall_at_5": round(figures.recall_at_5, 4),
                f"{name}_recall_at_10": round(figures.recall_at_10, 4),
                f"{name}_load_s": round(figures.load_seconds, 3),
            }
        return {
            "documents": self.documents,
            "chunks": self.chunks,
            "device": self.device,
            "raw_docs_per_s": round(raw, 2),
            "raw_batch": RAW_BATCH,
            "raw_small_batch_docs_per_s": round(self.documents / self.raw_small_batch_seconds, 2),
            "pipeline_docs_per_s": round(pipeline, 2),
            "ratio": round(pipeline / raw, 3),
            "incremental_documents": self.incremental_documents,
            "incremental_seconds": round(self.incremental_seconds, 3),
            "incremental_fraction": round(self.incremental_seconds / self.pipeline_seconds, 4),
            "pipeline_backend": self.pipeline_backend,
            "probes": self.probes,
            **per_backend,
        }


def run_embed_bench(
    platform_url: str,
    catalog: Catalog,
    rows: int,
    corpus,
    say=print,
    backends: tuple[str, ...] = tuple(BACKENDS),
) -> EmbedFigures:
    import psycopg2
    from sentence_transformers import SentenceTransformer

    from sophia_assets.demo.seed import seed_documents
    from sophia_assets.embedding.derivation import VectorUpdates
    from sophia_assets.embedding.embedder import Embedder, ModelCard, default_model_path
    from sophia_assets.embedding.index_sync import sync_index
    from sophia_assets.embedding.recall import held_out_probes
    from sophia_assets.flow.capture import CaptureRunner
    from sophia_assets.vectors.pgvector import PgVectorIndex

    card = ModelCard.read(default_model_path())
    embedder = Embedder(card, backend="auto")  # what a run uses: ONNX on the CPU
    with scratch_database(platform_url, "embed") as url:
        os.environ[ENV] = url
        index = PgVectorIndex(lambda: psycopg2.connect(url))
        seed_documents(url, corpus, rows)
        capture, catalog = scratch_capture(catalog)
        CaptureRunner(capture, catalog, url, url).drain()

        conn = psycopg2.connect(url)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT title, body FROM public.documents ORDER BY id")
            documents = [f"{title}\n\n{body}" for title, body in cur.fetchall()]
        conn.close()
        texts = [chunk for document in documents for chunk in embedder.chunks(document)]
        say(f"raw: SentenceTransformer.encode of {len(texts)} chunks of {rows} documents...")
        raw_model = SentenceTransformer(str(card.path), device=embedder.device)
        started = time.perf_counter()
        raw = raw_model.encode(texts, batch_size=RAW_BATCH, normalize_embeddings=True)
        raw_seconds = time.perf_counter() - started
        say(f"raw again at our batch size ({embedder.batch_size})...")
        started = time.perf_counter()
        raw_model.encode(texts, batch_size=embedder.batch_size, normalize_embeddings=True)
        raw_small_batch_seconds = time.perf_counter() - started
        del raw_model
        probes = held_out_probes(documents)
        backends = {
            name: backend_figures(card, name, documents, raw, probes, embedder.batch_size)
            for name in backends
        }

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
        raw_small_batch_seconds,
        pipeline_seconds,
        changed,
        incremental_seconds,
        pipeline_backend=embedder.backend,
        probes=len(probes),
        backends=backends,
    )


def backend_figures(
    card, name: str, documents: list[str], raw, probes: list[tuple[int, str]], batch_size: int
) -> BackendFigures:
    """Our embedder on one backend: speed, agreement with raw torch, recall, load time."""
    import numpy as np

    from resources.embedder import guard_documents
    from sophia_assets.embedding.embedder import Embedder
    from sophia_assets.embedding.recall import recall_at

    backend, precision = BACKENDS[name]
    say(f"{name}: our embedder on {len(documents)} documents, then {len(probes)} probes...")
    card = card.at_precision(precision)
    embedder = Embedder(
        card, device="cpu", batch_size=batch_size, backend=backend, guard_documents=guard_documents
    )
    if embedder.backend != backend:
        raise RuntimeError(f"{name}: the {backend} backend did not load ({embedder.fallback})")
    started = time.perf_counter()
    per_document = embedder.embed_documents(documents)
    seconds = time.perf_counter() - started
    vectors = np.array([v for chunks in per_document for v in chunks], dtype=np.float32)
    cosine = (vectors * raw).sum(axis=1) / np.maximum(
        np.linalg.norm(vectors, axis=1) * np.linalg.norm(raw, axis=1), 1e-12
    )
    owners = np.array([i for i, chunks in enumerate(per_document) for _ in chunks])
    queries = np.array(embedder.embed([text for _, text in probes]), dtype=np.float32)
    recall = recall_at(queries, [i for i, _ in probes], vectors, owners, len(documents), (5, 10))
    return BackendFigures(
        seconds=seconds,
        min_cosine=float(cosine.min()),
        mean_cosine=float(cosine.mean()),
        recall_at_5=recall[5],
        recall_at_10=recall[10],
        load_seconds=fresh_load_seconds(backend, precision),
    )


def fresh_load_seconds(backend: str, precision: str) -> float:
    """`Embedder.load_seconds` in a new process: what a run pays before its first vector."""
    result = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, backend, precision],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded, seconds = result.stdout.split()[-2:]
    if loaded != backend:
        raise RuntimeError(f"a fresh process loaded {loaded}, not {backend}")
    return float(seconds)


def print_embed_figures(figures: EmbedFigures, as_json: bool) -> None:
    data = figures.as_dict()
    print(
        f"raw SentenceTransformer.encode: {data['raw_docs_per_s']:>8} documents/s "
        f"({figures.chunks} chunks, {figures.device}, batch {RAW_BATCH}); "
        f"{data['raw_small_batch_docs_per_s']} at our batch size"
    )
    print(
        f"our pipeline:                   {data['pipeline_docs_per_s']:>8} documents/s "
        f"({figures.pipeline_backend})"
    )
    print(f"ratio (pipeline / raw):         {data['ratio']:>8}")
    for name in figures.backends:
        print(
            f"{name + ' embed_documents:':<32}{data[f'{name}_docs_per_s']:>8} documents/s, "
            f"{data[f'{name}_ratio']}x raw; cosine to raw min {data[f'{name}_min_cosine']} "
            f"mean {data[f'{name}_mean_cosine']}; recall@5 {data[f'{name}_recall_at_5']} "
            f"@10 {data[f'{name}_recall_at_10']} ({figures.probes} probes); "
            f"load {data[f'{name}_load_s']} s"
        )
    print(
        f"incremental after {figures.incremental_documents} changes: "
        f"{data['incremental_seconds']} s = {data['incremental_fraction']:.2%} of the full run"
    )
    if as_json:
        print(json.dumps(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.embed", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000, help="documents (1000)")
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"which of {', '.join(BACKENDS)} to measure (all; onnx_int8's first use quantizes "
        "and runs its recall guard, a minute or two)",
    )
    add_json_flag(parser)
    args = parser.parse_args(argv)
    backends = tuple(args.backends.split(","))
    if unknown := set(backends) - set(BACKENDS):
        parser.error(f"--backends: unknown {', '.join(sorted(unknown))}")
    from sophia_assets.catalog import load_catalog
    from sophia_assets.demo.corpus import demo_corpus
    from sophia_assets.home import flow_specs_dir, sophia_home
    from sophia_assets.postgres.embedded_server import postgres_url

    corpus = demo_corpus(sophia_home())
    figures = run_embed_bench(
        postgres_url(), load_catalog(flow_specs_dir()), args.rows, corpus, say, backends
    )
    print_embed_figures(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
