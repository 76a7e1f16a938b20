"""Runs of the embedding entrypoint, as the derivation sees them: an embedder whose
`embed_documents` ships the batch to the entrypoint (a local subprocess or a rented GPU over
SSH, both through Dagster Pipes) and reads the vectors back."""

from __future__ import annotations

import itertools
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from sophia_assets.embedding.batch import read_vectors, write_batch
from sophia_assets.embedding.embedder import ModelCard
from sophia_assets.gpu.pipes_ssh import PipesSshClient
from sophia_assets.gpu.ssh import SshTarget

ENTRYPOINT = "-m sophia_assets.embedding.entrypoint"

# (batch file bytes, extras) -> (vectors file bytes, figures the entrypoint reported)
Invoke = Callable[[bytes, dict], tuple[bytes, dict]]


@dataclass
class EntrypointEmbedder:
    card: ModelCard
    invoke: Invoke
    device: str = "auto"
    batch_size: int = 64
    figures: list[dict] = field(default_factory=list)
    compute_s: float = 0.0
    metadata: dict[str, object] = field(default_factory=dict)  # the runner's, e.g. costs

    def embed_documents(self, texts: list[str]) -> list[list[list[float]]]:
        if not texts:
            return []
        extras = {
            "model_version": self.card.version,
            "device": self.device,
            "batch_size": self.batch_size,
        }
        started = time.perf_counter()
        data, figures = self.invoke(write_batch(texts), extras)
        self.compute_s += time.perf_counter() - started
        self.figures.append(figures)
        documents = read_vectors(data)
        if len(documents) != len(texts):
            raise RuntimeError(
                f"the entrypoint returned {len(documents)} documents for a batch of {len(texts)}"
            )
        return documents

    def summary(self) -> dict[str, object]:
        documents = sum(f.get("documents", 0) for f in self.figures)
        seconds = sum(f.get("seconds", 0.0) for f in self.figures)
        last = self.figures[-1] if self.figures else {}
        return {
            "runner/batches": len(self.figures),
            "runner/documents_per_s": round(documents / seconds, 2) if seconds else 0.0,
            "runner/device": str(last.get("device", "")),
            "runner/device_name": str(last.get("device_name", "")),
            "runner/peak_memory_mb": max(
                (f.get("peak_memory_mb", 0) for f in self.figures), default=0
            ),
        }


def _figures(invocation) -> dict:
    messages = invocation.get_custom_messages()
    if not messages:
        raise RuntimeError("the embedding entrypoint reported no figures; it did not finish")
    return messages[-1]


def local_invoke(context: dg.AssetExecutionContext) -> Invoke:
    """The entrypoint as a subprocess of this run, on this machine's device."""
    client = dg.PipesSubprocessClient()

    def invoke(batch: bytes, extras: dict) -> tuple[bytes, dict]:
        with tempfile.TemporaryDirectory(prefix="sophia-embed-") as tmp:
            batch_path, output_path = Path(tmp) / "batch.jsonl", Path(tmp) / "vectors.npz"
            batch_path.write_bytes(batch)
            invocation = client.run(
                context=context,
                command=[sys.executable, *ENTRYPOINT.split()],
                extras={**extras, "batch_path": str(batch_path), "output_path": str(output_path)},
            )
            return output_path.read_bytes(), _figures(invocation)

    return invoke


def remote_invoke(
    context: dg.AssetExecutionContext,
    target: SshTarget,
    workdir: str,
    python: str,
    on_line: Callable[[], None],
) -> Invoke:
    """The entrypoint on a rented machine over SSH: batch in, Pipes run, vectors out."""
    client = PipesSshClient(target, on_line=on_line)
    calls = itertools.count(1)

    def invoke(batch: bytes, extras: dict) -> tuple[bytes, dict]:
        n = next(calls)
        batch_name, output_name = f"batch-{n}.jsonl", f"vectors-{n}.npz"
        target.put(batch, f"{workdir}/{batch_name}")
        invocation = client.run(
            context=context,
            command=f"{python} {ENTRYPOINT}",
            workdir=workdir,
            extras={**extras, "batch_path": batch_name, "output_path": output_name},
        )
        return target.get(f"{workdir}/{output_name}"), _figures(invocation)

    return invoke
