"""Caches that are pure functions of pinned inputs, each keyed by them: the demo corpus (every
installed docstring parsed: ~15 s of CPU) and the model's ONNX export (30-60 s). The session
builds each once (tests/conftest.py: `corpus_file`, `shared_model_cache`); these put a copy in
a home or cache a test made for itself, as a run there that built them would have left it."""

from __future__ import annotations

import shutil
from pathlib import Path

from sophia_assets.embedding import onnx_export
from sophia_assets.embedding.embedder import ModelCard, default_model_path


def place_corpus(corpus_file: Path, home: Path) -> None:
    """`home`'s cache (SOPHIA_HOME/cache, where the demo reads it) holds the demo corpus."""
    (home / "cache").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(corpus_file, home / "cache" / corpus_file.name)


def place_onnx_export(shared_cache: Path, cache: Path) -> None:
    """`cache` (a SOPHIA_CACHE) holds the session's fp32 ONNX export: the model and its report
    only, nothing made from it since (an int8 model)."""
    key = onnx_export.cache_key(ModelCard.read(default_model_path()))
    target = cache / "onnx" / key
    target.mkdir(parents=True, exist_ok=True)
    for name in (onnx_export.MODEL_FILE, onnx_export.REPORT_FILE):
        shutil.copyfile(shared_cache / "onnx" / key / name, target / name)
