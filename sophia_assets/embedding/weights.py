"""The model weights' digest, the embedding asset's code version. Hashing ~90 MB costs about a
second, and every process that loads the code location needs it, so digests are cached (see
`home.cache_dir`) by each file's identity (path, size, modification time): a changed file is hashed
again, an unchanged one never."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from sophia_assets.home import cache_dir

CACHE_FILE = "weights-digests.json"


def weights_digest(model_dir: Path) -> str:
    """sha256 over the folder's weight files (safetensors, then bin), in name order."""
    files = sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin"))
    identity = json.dumps([_identity(f) for f in files])
    cache_path = cache_dir() / CACHE_FILE
    cache = _read(cache_path)
    if identity not in cache:
        cache[identity] = _hash(files)
        _write(cache_path, cache)
    return cache[identity]


def _identity(file: Path) -> list:
    stat = file.stat()
    return [str(file.resolve()), stat.st_size, stat.st_mtime_ns]


def _hash(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def _read(path: Path) -> dict[str, str]:
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: hash again
    return cache if isinstance(cache, dict) else {}


def _write(path: Path, cache: dict[str, str]) -> None:
    """Through a temporary file, so concurrent processes never read half a cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(json.dumps(cache))
    partial.replace(path)
