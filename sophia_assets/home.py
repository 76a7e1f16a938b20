"""Where the project's files and the local state live.

`SOPHIA_HOME` (default `.sophia/` in the working directory) holds everything local: the
embedded Postgres, caches and the Dagster instance's storage.
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
