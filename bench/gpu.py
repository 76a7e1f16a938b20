"""`python -m bench.gpu`: the embedding entrypoint (Dagster Pipes subprocess, what a GPU runner
runs) against the same `Embedder` called in this process, on the demo corpus, on this
machine's device. On a CUDA device it also embeds on the CPU and reports the lowest cosine
between the two (half precision on the GPU must stay >= 0.999).

- in-process: `Embedder.embed_documents`, model loaded beforehand (the baseline);
- entrypoint: a Dagster run whose asset calls `LocalGpuRunner`; the entrypoint's own figures
  (documents/s without its model load, peak memory) and the step's whole wall time.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.report import add_json_flag, say

OUTPUT_ENV = "SOPHIA_BENCH_GPU_OUT"


@dataclass
class GpuFigures:
    documents: int
    chunks: int
    device: str
    device_name: str
    inprocess_seconds: float
    entrypoint_figures: dict
    step_seconds: float
    min_cosine_vs_cpu: float | None

    def as_dict(self) -> dict:
        inprocess = self.documents / self.inprocess_seconds
        entrypoint = self.entrypoint_figures["documents_per_s"]
        return {
            "documents": self.documents,
            "chunks": self.chunks,
            "device": self.device,
            "device_name": self.device_name,
            "inprocess_docs_per_s": round(inprocess, 2),
            "entrypoint_docs_per_s": entrypoint,
            "ratio": round(entrypoint / inprocess, 3),
            "entrypoint_load_s": self.entrypoint_figures["load_s"],
            "step_seconds": round(self.step_seconds, 3),
            "step_overhead_s": round(self.step_seconds - self.inprocess_seconds, 3),
            "peak_memory_mb": self.entrypoint_figures["peak_memory_mb"],
            "min_cosine_vs_cpu": self.min_cosine_vs_cpu,
        }


def run_gpu_bench(corpus, documents: int, device: str = "auto", say=print) -> GpuFigures:
    import dagster as dg
    import numpy as np

    from resources.gpu_runner import GpuRunner, LocalGpuRunner
    from sophia_assets.embedding.batch import read_vectors, write_vectors
    from sophia_assets.embedding.embedder import Embedder, ModelCard, default_model_path

    texts = [f"{d.title}\n\n{d.body}" for d in corpus[:documents]]
    card = ModelCard.read(default_model_path())
    embedder = Embedder(card, device=device)
    say(f"in-process: {len(texts)} documents on {embedder.device}")
    started = time.perf_counter()
    local = embedder.embed_documents(texts)
    inprocess_seconds = time.perf_counter() - started

    @dg.asset(name="bench_gpu")
    def bench_gpu(context, gpu_runner: GpuRunner) -> dg.MaterializeResult:
        with gpu_runner.session(context, card) as remote:
            vectors = remote.embed_documents(texts)
        Path(os.environ[OUTPUT_ENV]).write_bytes(write_vectors(vectors, card.dimensions))
        return dg.MaterializeResult(metadata={"figures": remote.figures[-1]})

    with tempfile.TemporaryDirectory() as tmp:
        os.environ[OUTPUT_ENV] = str(Path(tmp) / "vectors.npz")
        say("entrypoint: the same documents through a Dagster Pipes subprocess")
        started = time.perf_counter()
        result = dg.materialize(
            [bench_gpu], resources={"gpu_runner": LocalGpuRunner(device=device)}
        )
        step_seconds = time.perf_counter() - started
        figures = result.asset_materializations_for_node("bench_gpu")[0].metadata["figures"]
        through_pipes = read_vectors(Path(os.environ[OUTPUT_ENV]).read_bytes())

    min_cosine = None
    if embedder.device.startswith("cuda"):
        say("reference: the same documents on the CPU")
        cpu = Embedder(card, device="cpu").embed_documents(texts)
        a = np.array([v for doc in through_pipes for v in doc])
        b = np.array([v for doc in cpu for v in doc])
        cosines = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        min_cosine = round(float(cosines.min()), 6)
    elif through_pipes != local:
        raise RuntimeError("the entrypoint's vectors differ from the in-process ones on the CPU")
    return GpuFigures(
        documents=len(texts),
        chunks=sum(len(doc) for doc in local),
        device=embedder.device,
        device_name=figures.value["device_name"],
        inprocess_seconds=inprocess_seconds,
        entrypoint_figures=figures.value,
        step_seconds=step_seconds,
        min_cosine_vs_cpu=min_cosine,
    )


def print_gpu_figures(figures: GpuFigures, as_json: bool) -> None:
    data = figures.as_dict()
    print(
        f"in-process Embedder:    {data['inprocess_docs_per_s']:>8} documents/s "
        f"({figures.chunks} chunks, {figures.device}, {figures.device_name})"
    )
    print(
        f"entrypoint via Pipes:   {data['entrypoint_docs_per_s']:>8} documents/s "
        f"(+ {data['entrypoint_load_s']} s model load, peak {data['peak_memory_mb']} MB)"
    )
    print(f"ratio (entrypoint / in-process): {data['ratio']}")
    print(f"whole step: {data['step_seconds']} s, {data['step_overhead_s']} s over in-process")
    if figures.min_cosine_vs_cpu is not None:
        print(f"lowest cosine vs the CPU's vectors: {figures.min_cosine_vs_cpu}")
    if as_json:
        print(json.dumps(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__)
    parser.add_argument("--documents", type=int, default=1000, help="demo documents (1000)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda:N (auto)")
    add_json_flag(parser)
    args = parser.parse_args(argv)
    from sophia_assets.demo.corpus import demo_corpus
    from sophia_assets.home import sophia_home

    corpus = demo_corpus(sophia_home())
    print_gpu_figures(run_gpu_bench(corpus, args.documents, args.device, say=say), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
