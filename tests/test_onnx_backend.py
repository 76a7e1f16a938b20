"""The ONNX Runtime backend against torch: the same vectors, a cache that survives damage, a
fallback to torch that says why, and a code version that moves only when vectors would."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from resources.embedder import EmbedderResource
from sophia_assets.embedding import onnx_export
from sophia_assets.embedding.embedder import (
    Embedder,
    ModelCard,
    ModelError,
    default_model_path,
    resolve_backend,
)
from sophia_assets.embedding.onnx_export import MODEL_FILE, REPORT_FILE, ExportError
from tests.support.caches import place_onnx_export

pytestmark = pytest.mark.slow

LONG = " ".join(
    f"Sentence {n}: os.path.join joins path segments and returns the concatenation."
    for n in range(120)
)
TEXTS = {
    "short": ["a", "Return the absolute value of a number.", "sort a list"],
    "long": [LONG, "Title\n\n" + "word " * 900],
    "empty-ish": [" ", ".", "\n\n", "🙂", "--"],
    "non-English": [
        "Le renard brun rapide saute par-dessus le chien paresseux.",
        "Über Äpfel, Öl und die Straße: der schnelle braune Fuchs.",
        "速い茶色の狐がのろまな犬を飛び越える。",
        "Быстрая коричневая лиса прыгает через ленивую собаку.",
        "الثعلب البني السريع يقفز فوق الكلب الكسول",
    ],
}


@pytest.fixture(scope="module")
def card() -> ModelCard:
    return ModelCard.read(default_model_path())


@pytest.fixture(scope="module")
def export_home(
    tmp_path_factory: pytest.TempPathFactory, card: ModelCard, shared_model_cache: Path
) -> Path:
    """A home whose cache holds a real export: the session's (made once, by `cached_model`),
    copied, and read back here as the cache is read."""
    home = tmp_path_factory.mktemp("onnx-home")
    place_onnx_export(shared_model_cache, home / "cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOPHIA_HOME", str(home))
        patch.setenv("SOPHIA_CACHE", str(home / "cache"))
        onnx_export.cached_model(card)
    return home


@pytest.fixture(scope="module")
def onnx_embedder(export_home: Path, card: ModelCard) -> Embedder:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOPHIA_HOME", str(export_home))
        patch.setenv("SOPHIA_CACHE", str(export_home / "cache"))
        embedder = Embedder(card, device="cpu", backend="onnx")
    assert embedder.backend == "onnx", embedder.fallback
    return embedder


@pytest.fixture(scope="module")
def torch_embedder(card: ModelCard) -> Embedder:
    return Embedder(card, device="cpu", backend="torch")


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch, export_home: Path, card: ModelCard) -> list[Path]:
    """Counts exports; each one copies the module's real export instead of taking ~30 s."""
    good = export_home / "cache" / "onnx" / onnx_export.cache_key(card)
    report = onnx_export.ExportReport(**json.loads((good / REPORT_FILE).read_text()))
    made: list[Path] = []

    def export(card: ModelCard, path: Path) -> onnx_export.ExportReport:
        shutil.copyfile(good / MODEL_FILE, path)
        made.append(path)
        return report

    monkeypatch.setattr(onnx_export, "export", export)
    return made


@pytest.mark.parametrize("kind", sorted(TEXTS))
def test_onnx_vectors_equal_torch(
    kind: str, onnx_embedder: Embedder, torch_embedder: Embedder
) -> None:
    texts = TEXTS[kind]
    assert [onnx_embedder.chunks(t) for t in texts] == [torch_embedder.chunks(t) for t in texts]
    onnx_docs = onnx_embedder.embed_documents(texts)
    torch_docs = torch_embedder.embed_documents(texts)
    assert [len(d) for d in onnx_docs] == [len(d) for d in torch_docs]
    a = np.array([v for d in onnx_docs for v in d])
    b = np.array([v for d in torch_docs for v in d])
    cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() >= 0.9999, (kind, cosine.min())


def test_the_export_reports_its_agreement_with_torch(export_home: Path, card: ModelCard) -> None:
    folder = export_home / "cache" / "onnx" / onnx_export.cache_key(card)
    report = json.loads((folder / REPORT_FILE).read_text())
    assert report["min_cosine"] >= onnx_export.MIN_COSINE
    assert report["max_abs_diff"] < 1e-3
    assert report["opset"] == onnx_export.OPSET
    assert card.weights_digest[:16] in folder.name and str(onnx_export.OPSET) in folder.name


def test_auto_is_onnx_on_the_cpu_and_torch_on_cuda() -> None:
    assert resolve_backend("auto", "cpu") == "onnx"
    assert resolve_backend("auto", "cuda:0") == "torch"
    assert resolve_backend("torch", "cpu") == "torch"
    with pytest.raises(ModelError, match="CPU only"):
        resolve_backend("onnx", "cuda")


def test_an_intact_cache_is_used_as_it_is(
    exports: list[Path], export_home: Path, card: ModelCard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOPHIA_HOME", str(export_home))
    monkeypatch.setenv("SOPHIA_CACHE", str(export_home / "cache"))
    assert Embedder(card, device="cpu", backend="onnx").backend == "onnx"
    assert exports == []


@pytest.mark.parametrize(
    "damage",
    ["missing cache", "missing model", "truncated model", "flipped byte", "garbled report"],
)
def test_a_damaged_or_missing_cache_is_rebuilt(
    damage: str,
    exports: list[Path],
    export_home: Path,
    card: ModelCard,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "home"
    key = onnx_export.cache_key(card)
    shutil.copytree(export_home / "cache" / "onnx", home / "cache" / "onnx")
    folder = home / "cache" / "onnx" / key
    model = folder / MODEL_FILE
    if damage == "missing cache":
        shutil.rmtree(folder)
    elif damage == "missing model":
        model.unlink()
    elif damage == "truncated model":
        model.write_bytes(model.read_bytes()[:1000])
    elif damage == "flipped byte":
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF
        model.write_bytes(bytes(data))
    else:
        (folder / REPORT_FILE).write_text("{not json")
    monkeypatch.setenv("SOPHIA_HOME", str(home))
    monkeypatch.setenv("SOPHIA_CACHE", str(home / "cache"))

    embedder = Embedder(card, device="cpu", backend="onnx")

    assert embedder.backend == "onnx", embedder.fallback
    assert len(exports) == 1
    assert onnx_export.cached_model(card)[1].sha256 == embedder.export.sha256
    assert sorted(p.name for p in folder.parent.iterdir()) == [key]  # no partial left behind
    assert len(exports) == 1


def test_an_export_finished_by_another_process_is_kept(
    exports: list[Path], export_home: Path, card: ModelCard, tmp_path: Path, monkeypatch
) -> None:
    home = tmp_path / "home"
    shutil.copytree(export_home / "cache" / "onnx", home / "cache" / "onnx")
    monkeypatch.setenv("SOPHIA_HOME", str(home))
    monkeypatch.setenv("SOPHIA_CACHE", str(home / "cache"))
    folder = onnx_export.cache_dir(card)
    before = (folder / MODEL_FILE).stat().st_ino

    onnx_export._export_into(card, folder)  # as if this process lost the race

    assert (folder / MODEL_FILE).stat().st_ino == before
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]
    onnx_export.cached_model(card)


def test_a_failed_export_falls_back_to_torch_and_says_why(
    card: ModelCard, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path
) -> None:
    monkeypatch.setenv("SOPHIA_CACHE", str(tmp_path / "empty-cache"))

    def export(card: ModelCard, path: Path):
        raise ExportError("the exporter met an operator it cannot write")

    monkeypatch.setattr(onnx_export, "export", export)
    with caplog.at_level(logging.WARNING, logger="sophia.embedding"):
        embedder = Embedder(card, device="cpu", backend="auto")
    assert embedder.backend == "torch"
    assert "cannot write" in embedder.fallback
    assert any("cannot write" in r.getMessage() for r in caplog.records)
    assert len(embedder.embed(["still embeds"])[0]) == card.dimensions


def test_the_code_version_moves_only_when_vectors_would(card: ModelCard) -> None:
    versions = {EmbedderResource(backend=b).card().version for b in ("auto", "torch", "onnx")}
    assert versions == {card.version}  # fp32 ONNX equals torch: same vectors, same version
    int8 = {EmbedderResource(backend=b, precision="int8").card().version for b in ("auto", "onnx")}
    assert int8 == {f"{card.version}+int8"}  # int8 vectors differ: a new version
    with pytest.raises(ModelError, match="int8 runs on the onnx backend"):
        EmbedderResource(backend="torch", precision="int8").card()
    with pytest.raises(ModelError, match="unknown"):
        EmbedderResource(backend="tensorrt").card()
    with pytest.raises(ModelError, match="unknown"):
        EmbedderResource(precision="fp16").card()
