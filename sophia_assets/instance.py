"""The Dagster instance the `sophia` CLI records its runs in: the one `dagster dev` shows."""

import os

import dagster as dg
from dagster._core.instance.ref import InstanceRef

from sophia_assets.home import PROJECT_ROOT, sophia_home


def local_instance() -> dg.DagsterInstance:
    """DAGSTER_HOME's instance when it is set; otherwise the root `dagster.yaml`, as
    `dagster dev` reads it when started from the repository root."""
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    ref = InstanceRef.from_dir(str(sophia_home() / "dagster"), config_dir=str(PROJECT_ROOT))
    return dg.DagsterInstance.from_ref(ref)
