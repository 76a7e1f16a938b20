"""The whole asset graph against its reviewed snapshot (keys, lineage, groups, kinds, owners,
checks, automation, freshness, jobs, sensors, schedules). A deliberate change: run
`SOPHIA_UPDATE_SNAPSHOTS=1 uv run pytest tests/test_asset_graph_snapshot.py` and review the
diff of tests/snapshots/asset_graph.json with the change."""

from __future__ import annotations

import json
import os

from tests.support.graph_snapshot import SNAPSHOT, UPDATE_ENV
from tests.support.processes import run_python

# In a fresh process; conftest has cleared the production settings (Lambda, Pinecone, a
# catalog override), so the graph is the default location's.
PRINT_SNAPSHOT = """
import json
from sophia_assets.definitions import defs
from tests.support.graph_snapshot import graph_snapshot
print(json.dumps(graph_snapshot(defs), indent=2, sort_keys=True))
"""


def test_the_asset_graph_matches_its_snapshot() -> None:
    result = run_python(PRINT_SNAPSHOT)
    current = json.loads(result.stdout)
    if os.environ.get(UPDATE_ENV):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    recorded = json.loads(SNAPSHOT.read_text())
    assert current == recorded, (
        f"the asset graph changed; if that is intended, run {UPDATE_ENV}=1 uv run pytest "
        "tests/test_asset_graph_snapshot.py and commit the reviewed snapshot"
    )
