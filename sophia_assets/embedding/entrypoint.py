"""The embedding entrypoint, a Dagster Pipes script: `python -m sophia_assets.embedding.entrypoint`.

It reads a batch of texts (extras `batch_path`), embeds it with the same `Embedder` the
in-process path uses, writes per document the vectors of its chunks (`output_path`), and
reports its figures (documents/s, device, peak memory) as a Pipes custom message. The same
script runs as a local subprocess or on a rented GPU over SSH.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

from dagster_pipes import PipesContext, open_dagster_pipes

from sophia_assets.embedding.batch import read_batch, write_vectors
from sophia_assets.embedding.embedder import Embedder, ModelCard, default_model_path

PROGRESS_EVERY_S = 10.0


def main() -> None:
    with open_dagster_pipes() as pipes:
        pipes.report_custom_message(embed_batch(pipes))


def embed_batch(pipes: PipesContext) -> dict:
    extras = pipes.extras
    texts = read_batch(Path(extras["batch_path"]))
    card = ModelCard.read(
        Path(extras["model_path"]) if extras.get("model_path") else default_model_path()
    )
    expected = extras.get("model_version")
    if expected and card.version != expected:
        raise RuntimeError(
            f"this machine's model is {card.version}, the run expects {expected}; "
            "install the locked environment (uv sync --frozen) here"
        )
    started = time.perf_counter()
    embedder = Embedder(
        card, device=extras.get("device", "auto"), batch_size=int(extras.get("batch_size", 64))
    )
    loaded = time.perf_counter()
    pipes.log.info(
        f"{card.version} on {embedder.device} loaded in {loaded - started:.1f} s; "
        f"{len(texts)} documents"
    )
    torch = embedder._torch
    if embedder.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    documents = embedder.embed_documents(texts, on_batch=_progress(pipes, len(texts)))
    if embedder.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - loaded
    Path(extras["output_path"]).write_bytes(write_vectors(documents, card.dimensions))
    chunks = sum(len(vectors) for vectors in documents)
    return {
        "documents": len(texts),
        "chunks": chunks,
        "seconds": round(seconds, 3),
        "documents_per_s": round(len(texts) / seconds, 2) if seconds else 0.0,
        "load_s": round(loaded - started, 3),
        "device": embedder.device,
        "device_name": _device_name(embedder, torch),
        "peak_memory_mb": _peak_memory_mb(embedder, torch),
        "model": card.version,
    }


def _progress(pipes: PipesContext, total: int):
    state = {"chunks": 0, "last": time.perf_counter()}

    def report(done: int) -> None:
        state["chunks"] += done
        if time.perf_counter() - state["last"] >= PROGRESS_EVERY_S:
            state["last"] = time.perf_counter()
            pipes.log.info(f"{state['chunks']} chunks embedded ({total} documents in the batch)")

    return report


def _device_name(embedder: Embedder, torch) -> str:
    if embedder.device.startswith("cuda"):
        return torch.cuda.get_device_name(embedder.device)
    return "cpu"


def _peak_memory_mb(embedder: Embedder, torch) -> float:
    """GPU memory the model and batches peaked at; on the CPU, the process's peak RSS."""
    if embedder.device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated(embedder.device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


if __name__ == "__main__":
    sys.exit(main())
