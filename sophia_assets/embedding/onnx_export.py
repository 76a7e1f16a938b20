"""The model exported to ONNX, once per weights, from the local folder (nothing is downloaded).

The exported graph is the whole sentence embedding: transformer, pooling and normalisation, so
ONNX Runtime returns the final vectors. Before it is kept, the export is checked against torch
on a fixed set of texts (short, long, empty-ish, non-English): its vectors must equal torch's
within `MIN_COSINE`, which is what lets the ONNX backend keep the model's code version.

The cache lives in `<cache>/onnx/<key>/` (`model.onnx` and `export.json`; the cache is
`SOPHIA_CACHE`, else `SOPHIA_HOME/cache`), the key made of the weights digest, the exporter and
the opset. A new export is written to a private
folder and renamed into place, so concurrent processes never see half a model; `export.json`
holds the model file's sha256, and a cache that does not match it is exported again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

from sophia_assets.embedding.embedder import ModelCard
from sophia_assets.home import cache_dir as sophia_cache

log = logging.getLogger("sophia.embedding")

OPSET = 17
MIN_COSINE = 0.9999  # vectors this close to torch's are the same vectors: same code version
MODEL_FILE = "model.onnx"
REPORT_FILE = "export.json"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "embedding"

# The texts an export is checked on: short, long (past the window), empty-ish, non-English.
CHECK_TEXTS = (
    "",
    " ",
    ".",
    "a",
    "Return the absolute value of a number.",
    "os.path.join(a, *p) joins one or more path segments intelligently. " * 40,
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "Der schnelle braune Fuchs springt über den faulen Hund. Äpfel, Öl, Übermut, Straße.",
    "速い茶色の狐がのろまな犬を飛び越える。",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "🙂 emoji, tabs\tand\nnewlines",
)


class ExportError(RuntimeError):
    """The model could not be exported, or the export's vectors differ from torch's."""


@dataclass(frozen=True)
class ExportReport:
    """How an export was made and how close its vectors are to torch's."""

    key: str
    exporter: str
    opset: int
    sha256: str
    texts: int
    max_abs_diff: float
    min_cosine: float
    seconds: float


def exporter() -> str:
    """The exporter's identity, read without importing torch: a new torch may export differently."""
    return f"torch{version('torch')}-torchscript-eager"


def cache_key(card: ModelCard) -> str:
    return f"{card.weights_digest[:16]}-{exporter()}-opset{OPSET}"


def cache_dir(card: ModelCard) -> Path:
    return sophia_cache() / "onnx" / cache_key(card)


def cached_model(card: ModelCard) -> tuple[bytes, ExportReport]:
    """The exported model's bytes and its report: from the cache, else exported now.

    A cache that is missing, partial or damaged (its sha256 differs from the report's) is
    exported again; `ExportError` says why an export failed."""
    folder = cache_dir(card)
    try:
        return _read(folder)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning(f"ONNX cache {folder} is damaged ({error}); exporting the model again")
    _export_into(card, folder)
    return _read(folder)


def _read(folder: Path) -> tuple[bytes, ExportReport]:
    report = ExportReport(**json.loads((folder / REPORT_FILE).read_text()))
    model = (folder / MODEL_FILE).read_bytes()
    digest = hashlib.sha256(model).hexdigest()
    if digest != report.sha256:
        raise ValueError(f"{MODEL_FILE} has sha256 {digest[:12]}, its report {report.sha256[:12]}")
    return model, report


def _export_into(card: ModelCard, folder: Path) -> None:
    """Exports into a private folder, then renames it into place; if another process got there
    first, its export is kept and ours dropped."""
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        report = export(card, partial / MODEL_FILE)
        (partial / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2))
        if folder.exists():
            try:
                _read(folder)  # another process finished a good export meanwhile
                return
            except (OSError, ValueError, KeyError, TypeError):
                shutil.rmtree(folder, ignore_errors=True)  # the damaged cache we replace
        try:
            partial.rename(folder)
        except OSError:
            if not folder.exists():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def export(card: ModelCard, path: Path) -> ExportReport:
    """Writes the sentence-embedding graph to `path` and checks it against torch."""
    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the shipped folder only
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import numpy as np
        import onnxruntime
        import torch
        from transformers import AutoModel

        from sophia_assets.embedding.onnx_backend import feeds, load_tokenizer

        # Eager attention: ONNX Runtime fuses its pattern; the SDPA export ran ~20% slower here.
        model = AutoModel.from_pretrained(str(card.path), attn_implementation="eager").eval()
        graph = SentenceGraph(model, card.pooling, card.normalize)
        tokenizer = load_tokenizer(card)
        inputs = feeds(tokenizer, list(CHECK_TEXTS))
        tensors = tuple(torch.from_numpy(inputs[name]) for name in INPUTS)
        with torch.inference_mode():
            expected = graph(*tensors).numpy()
        with warnings.catch_warnings():  # the tracer's notes on shapes, checked below instead
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph,
                tensors,
                str(path),
                input_names=list(INPUTS),
                output_names=[OUTPUT],
                dynamic_axes={name: {0: "batch", 1: "tokens"} for name in INPUTS}
                | {OUTPUT: {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (actual,) = session.run([OUTPUT], inputs)
    except Exception as error:  # any failure of the exporter is a reason to stay on torch
        raise ExportError(f"{type(error).__name__}: {error}") from error
    cosine = _cosines(np, expected, actual)
    report = ExportReport(
        key=cache_key(card),
        exporter=exporter(),
        opset=OPSET,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        texts=len(CHECK_TEXTS),
        max_abs_diff=float(np.abs(expected - actual).max()),
        min_cosine=float(cosine.min()),
        seconds=round(time.perf_counter() - started, 3),
    )
    if report.min_cosine < MIN_COSINE:
        raise ExportError(
            f"the exported model's vectors differ from torch's (min cosine "
            f"{report.min_cosine:.6f} < {MIN_COSINE}, max abs difference {report.max_abs_diff:.2e})"
        )
    log.info(
        f"exported {card.name} to ONNX in {report.seconds:.1f} s: max abs difference "
        f"{report.max_abs_diff:.2e}, min cosine {report.min_cosine:.6f} to torch"
    )
    return report


def _cosines(np, a, b):
    dot = (a * b).sum(axis=1)
    return dot / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def _sentence_graph_class():
    import torch

    class _SentenceGraph(torch.nn.Module):
        """Transformer, pooling and normalisation as one module, the graph that is exported."""

        def __init__(self, model, pooling: str, normalize: bool):
            super().__init__()
            self.model = model
            self.pooling = pooling
            self.normalize = normalize

        def forward(self, input_ids, attention_mask, token_type_ids):
            # Keywords: transformers' forward takes these by name, not position.
            hidden = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
            ).last_hidden_state
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return pooled

    return _SentenceGraph


def SentenceGraph(model, pooling: str, normalize: bool):  # noqa: N802 - builds a torch module
    """The exported module; defined on first use so that importing this file never loads torch."""
    return _sentence_graph_class()(model, pooling, normalize)
