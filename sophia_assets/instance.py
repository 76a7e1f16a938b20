"""The Dagster instance the `sophia` CLI records its runs in: `$SOPHIA_HOME/dagster`, like the
rest of the local state (DAGSTER_HOME, when set, wins).

The instance's settings (run queue limits, telemetry) are the root `dagster.yaml`'s; they are
copied into the instance folder, where Dagster reads them, with storage at
`$SOPHIA_HOME/dagster/storage`: where the root file's relative `storage` points a plain
`dagster dev` in the repository root for the default SOPHIA_HOME. With another SOPHIA_HOME,
`DAGSTER_HOME=$SOPHIA_HOME/dagster dagster dev` shows it.
"""

import os
from pathlib import Path

import dagster as dg
import yaml

from sophia_assets.home import PROJECT_ROOT, sophia_home

SETTINGS = PROJECT_ROOT / "dagster.yaml"


def local_instance() -> dg.DagsterInstance:
    if not os.environ.get("DAGSTER_HOME"):
        home = sophia_home() / "dagster"
        write_settings(home)
        os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def write_settings(home: Path) -> None:
    """`home`/dagster.yaml: the root settings, storage under `home`/storage. Written through a
    temporary file, so a concurrent reader never sees half a file."""
    settings = yaml.safe_load(SETTINGS.read_text()) or {}
    settings["storage"] = {"sqlite": {"base_dir": str(home / "storage")}}
    text = "# Written by sophia from the repository's dagster.yaml; edit that file.\n"
    text += yaml.safe_dump(settings, sort_keys=False)
    target = home / "dagster.yaml"
    if target.exists() and target.read_text() == text:
        return
    home.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(text)
    partial.replace(target)
