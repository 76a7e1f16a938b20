"""precision int8: quantized from the fp32 export, guarded on held-out probes, cached with the
guard's figures, refused (never silently replaced by fp32 vectors) when the guard fails."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from resources.embedder import EmbedderResource, guard_documents
from sophia_assets.embedding.embedder import Embedder, ModelCard, ModelError, default_model_path
from sophia_assets.embedding.onnx_export import cache_dir
from sophia_assets.embedding.onnx_quantize import (
    INT8_FILE,
    INT8_REPORT,
    MAX_RECALL_DROP,
    QuantizationRefused,
    QuantReport,
    int8_model,
)
from tests.support.caches import place_corpus, place_onnx_export

pytestmark = pytest.mark.slow

GUARD_SIZE = 60  # enough for the mechanism; the benchmark measures the real guard's figures


@pytest.fixture(scope="module")
def int8_home(
    tmp_path_factory: pytest.TempPathFactory, shared_model_cache: Path, corpus_file: Path
) -> Path:
    """A home whose cache holds a real fp32 export (the session's, copied) and a real, guarded
    int8 model quantized from it here; the guard reads the demo corpus (the session's, copied)."""
    home = tmp_path_factory.mktemp("int8-home")
    place_onnx_export(shared_model_cache, home / "cache")
    place_corpus(corpus_file, home)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOPHIA_HOME", str(home))
        patch.setenv("SOPHIA_CACHE", str(home / "cache"))
        documents = guard_documents()[:GUARD_SIZE]
        int8_model(int8_card(), lambda: documents)
    return home


@pytest.fixture
def own_copy(int8_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of this test's own, with a copy of the module's caches, to damage at will."""
    home = tmp_path / "home"
    shutil.copytree(int8_home / "cache", home / "cache")
    monkeypatch.setenv("SOPHIA_HOME", str(home))
    monkeypatch.setenv("SOPHIA_CACHE", str(home / "cache"))
    return home


def int8_card() -> ModelCard:
    return ModelCard.read(default_model_path()).at_precision("int8")


def test_int8_keeps_recall_and_says_so(int8_home: Path, monkeypatch) -> None:
    monkeypatch.setenv("SOPHIA_HOME", str(int8_home))
    monkeypatch.setenv("SOPHIA_CACHE", str(int8_home / "cache"))
    report = json.loads((cache_dir(int8_card()) / INT8_REPORT).read_text())
    assert report["documents"] == GUARD_SIZE and report["probes"] > GUARD_SIZE // 2
    for k in (5, 10):
        assert report[f"int8_recall_at_{k}"] >= report[f"fp32_recall_at_{k}"] - MAX_RECALL_DROP


def test_int8_vectors_are_close_to_fp32_but_not_equal(int8_home: Path, monkeypatch) -> None:
    monkeypatch.setenv("SOPHIA_HOME", str(int8_home))
    monkeypatch.setenv("SOPHIA_CACHE", str(int8_home / "cache"))
    texts = guard_documents()[:20]
    int8 = Embedder(int8_card(), device="cpu", backend="auto")
    fp32 = Embedder(int8_card().at_precision("fp32"), device="cpu", backend="auto")
    assert (int8.backend, fp32.backend) == ("onnx", "onnx")
    a = np.array(int8.embed(texts))
    b = np.array(fp32.embed(texts))
    cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() > 0.95, cosine.min()
    assert cosine.max() < 0.99999  # different vectors: that is why the version names int8


def test_a_cached_int8_model_is_reused_and_a_damaged_one_made_again(own_copy: Path) -> None:
    folder = cache_dir(int8_card())
    asked = []

    def documents() -> list[str]:
        asked.append(1)
        return guard_documents()[:GUARD_SIZE]

    int8_model(int8_card(), documents)
    assert asked == []  # the guard's verdict is cached with the model
    (folder / INT8_FILE).write_bytes(b"not a model")
    model, report = int8_model(int8_card(), documents)
    assert asked == [1] and report.passed
    assert model == (folder / INT8_FILE).read_bytes()


def test_a_failed_guard_refuses_int8_with_its_figures(own_copy: Path) -> None:
    path = cache_dir(int8_card()) / INT8_REPORT
    report = QuantReport(**json.loads(path.read_text()))
    failed = replace(report, int8_recall_at_10=report.fp32_recall_at_10 - 0.05)
    path.write_text(json.dumps(asdict(failed)))  # as the guard writes a verdict it measured

    with pytest.raises(QuantizationRefused, match=r"recall@10 .* vs fp32 .*use precision fp32"):
        int8_model(int8_card(), None)
    # No fallback: torch's vectors are not the ones the int8 version names.
    with pytest.raises(ModelError, match="int8 is refused"):
        EmbedderResource(precision="int8", device="cpu").load()


def test_the_guard_judges_by_one_point_of_recall() -> None:
    base = QuantReport("m", "0" * 64, 10, 10, 0.9, 0.95, 0.9, 0.95, 1.0)
    assert replace(base, int8_recall_at_5=0.9 - MAX_RECALL_DROP).passed
    assert not replace(base, int8_recall_at_5=0.9 - MAX_RECALL_DROP - 0.001).passed
    assert not replace(base, int8_recall_at_10=0.93).passed
    assert replace(base, int8_recall_at_10=0.99).passed  # better is fine


def test_int8_without_guard_documents_says_what_to_do(own_copy: Path) -> None:
    for name in (INT8_FILE, INT8_REPORT):
        (cache_dir(int8_card()) / name).unlink()  # the fp32 export alone
    with pytest.raises(ModelError, match="needs documents to guard"):
        Embedder(int8_card(), device="cpu", backend="onnx")


def test_a_gpu_run_refuses_int8() -> None:
    with pytest.raises(ModelError, match="use precision fp32 there"):
        Embedder(int8_card(), device="cuda", backend="auto")
