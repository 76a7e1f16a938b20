"""precision int8: the fp32 export quantized, kept only where retrieval quality holds.

The quantization is dynamic with per-channel weights (each output channel of each MatMul gets
its own scale). On the demo corpus that kept recall@5/@10 within 0.3 points of fp32's while
naive per-tensor quantization drifted to a mean cosine of 0.94. It is never trusted on faith:
when the int8 model is made, a guard embeds `GUARD_DOCUMENTS` documents with both models and
searches each document's held-out probe (see `recall`); if int8's recall@5 or recall@10 falls
more than `MAX_RECALL_DROP` below fp32's, int8 is refused with the figures and nothing is
cached as usable. The figures are kept in `int8.json` beside the model.

int8 vectors differ from fp32's, so a model's version names its precision (`ModelCard`), and
switching precision makes the vector updates stale until they are embedded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from sophia_assets.embedding.embedder import ModelCard, ModelError
from sophia_assets.embedding.onnx_export import MODEL_FILE, cache_dir, cached_model

log = logging.getLogger("sophia.embedding")

INT8_FILE = "model-int8.onnx"
INT8_REPORT = "int8.json"
METHOD = "dynamic-per-channel-qint8"
GUARD_DOCUMENTS = 600
MAX_RECALL_DROP = 0.01  # one point of recall@5 or recall@10


class QuantizationRefused(ModelError):
    """int8 lost too much retrieval quality on the guard's probes."""


@dataclass(frozen=True)
class QuantReport:
    """How the int8 model was made and what the guard measured."""

    method: str
    sha256: str
    documents: int
    probes: int
    fp32_recall_at_5: float
    fp32_recall_at_10: float
    int8_recall_at_5: float
    int8_recall_at_10: float
    seconds: float

    @property
    def drop(self) -> float:
        return max(
            self.fp32_recall_at_5 - self.int8_recall_at_5,
            self.fp32_recall_at_10 - self.int8_recall_at_10,
        )

    @property
    def passed(self) -> bool:
        return self.drop <= MAX_RECALL_DROP + 1e-9

    def summary(self) -> str:
        return (
            f"recall@5 {self.int8_recall_at_5:.4f} vs fp32 {self.fp32_recall_at_5:.4f}, "
            f"recall@10 {self.int8_recall_at_10:.4f} vs fp32 {self.fp32_recall_at_10:.4f} "
            f"on {self.probes} held-out probes of {self.documents} documents"
        )


def int8_model(
    card: ModelCard, guard_documents: Callable[[], Sequence[str]] | None
) -> tuple[bytes, QuantReport]:
    """The int8 model and its guard report: from the cache, else quantized and guarded now.

    Raises `QuantizationRefused` when the guard fails (now or when it ran before)."""
    folder = cache_dir(card)
    cached_model(card)  # the fp32 export it is made from
    try:
        model, report = _read(folder)
    except FileNotFoundError:
        model, report = _make(card, folder, guard_documents)
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning(f"int8 cache in {folder} is damaged ({error}); quantizing again")
        model, report = _make(card, folder, guard_documents)
    if not report.passed:
        raise QuantizationRefused(
            f"precision int8 is refused for {card.name}: {report.summary()}, more than "
            f"{MAX_RECALL_DROP:.0%} below fp32; use precision fp32"
        )
    return model, report


def _read(folder: Path) -> tuple[bytes, QuantReport]:
    report = QuantReport(**json.loads((folder / INT8_REPORT).read_text()))
    model = (folder / INT8_FILE).read_bytes()
    if hashlib.sha256(model).hexdigest() != report.sha256:
        raise ValueError(f"{INT8_FILE} does not match its report's sha256")
    return model, report


def _make(
    card: ModelCard, folder: Path, guard_documents: Callable[[], Sequence[str]] | None
) -> tuple[bytes, QuantReport]:
    if guard_documents is None:
        raise ModelError(
            "precision int8 needs documents to guard its recall on; load the embedder through "
            "the embedder resource, which passes the demo corpus"
        )
    started = time.perf_counter()
    partial = folder / f"{INT8_FILE}.{os.getpid()}.partial"
    try:
        quantize(folder / MODEL_FILE, partial)
        model = partial.read_bytes()
        documents = list(guard_documents())[:GUARD_DOCUMENTS]
        log.info(f"guarding int8 on {len(documents)} documents' held-out probes (a minute or so)")
        fp32, int8 = guard(card, model, documents)
        report = QuantReport(
            method=METHOD,
            sha256=hashlib.sha256(model).hexdigest(),
            documents=len(documents),
            probes=fp32.pop("probes"),
            fp32_recall_at_5=fp32[5],
            fp32_recall_at_10=fp32[10],
            int8_recall_at_5=int8[5],
            int8_recall_at_10=int8[10],
            seconds=round(time.perf_counter() - started, 3),
        )
        # Model first, report last: a report is only ever next to the model it describes.
        partial.replace(folder / INT8_FILE)
        report_partial = folder / f"{INT8_REPORT}.{os.getpid()}.partial"
        report_partial.write_text(json.dumps(asdict(report), indent=2))
        report_partial.replace(folder / INT8_REPORT)
    finally:
        partial.unlink(missing_ok=True)
    log.info(f"int8 model of {card.name} made in {report.seconds:.0f} s: {report.summary()}")
    return model, report


def quantize(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of the MatMul weights, one scale per output channel."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    advice = _DropPreprocessAdvice()
    logging.getLogger().addFilter(advice)
    try:
        quantize_dynamic(
            str(source),
            str(target),
            per_channel=True,
            weight_type=QuantType.QInt8,
            # Shape inference cannot type every intermediate of the exported graph; all float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.getLogger().removeFilter(advice)


class _DropPreprocessAdvice(logging.Filter):
    """The quantizer advises its pre-processing on every call; on this graph that
    pre-processing stops at incomplete symbolic shape inference, so the advice is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def guard(card: ModelCard, int8: bytes, documents: Sequence[str]) -> tuple[dict, dict]:
    """Recall@5/@10 of the fp32 and the int8 model on the documents' held-out probes."""
    from sophia_assets.embedding.embedder import Embedder
    from sophia_assets.embedding.onnx_backend import OnnxEncoder
    from sophia_assets.embedding.recall import held_out_probes, probe_recall

    fp32_model, _ = cached_model(card)
    figures = []
    for model, precision in ((fp32_model, "fp32"), (int8, "int8")):
        at = card.at_precision(precision)
        embedder = Embedder(at, device="cpu", encoder=OnnxEncoder(at, model))
        figures.append(probe_recall(embedder, documents))
    figures[0]["probes"] = len(held_out_probes(documents))
    return figures[0], figures[1]
