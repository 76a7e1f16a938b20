"""Where the project's files and the local state live.

`SOPHIA_HOME` (default `.sophia/` in the working directory) holds everything local: the
embedded Postgres, caches and the Dagster instance's storage. `SOPHIA_CACHE` may move the
model caches (the ONNX export, weight digests) elsewhere, so that several homes, or the pods
of a Kubernetes deployment through a shared volume, export the model once.
"""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FLOW_SPECS_DIR = PROJECT_ROOT / "flow_specs"


def flow_specs_dir() -> Path:
    """The catalog folder: `SOPHIA_FLOW_SPECS`, else this repository's `flow_specs/`."""
    return Path(os.environ.get("SOPHIA_FLOW_SPECS") or FLOW_SPECS_DIR)


def sophia_home() -> Path:
    """The local state directory, created on first use."""
    home = Path(os.environ.get("SOPHIA_HOME") or ".sophia").expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def cache_dir() -> Path:
    """Caches of pure functions of pinned inputs, each keyed by those inputs, so safe to share:
    `SOPHIA_CACHE`, else `SOPHIA_HOME/cache`."""
    override = os.environ.get("SOPHIA_CACHE")
    cache = Path(override).expanduser().resolve() if override else sophia_home() / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    return cache
