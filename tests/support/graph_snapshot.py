"""A snapshot of the whole asset graph, as the model Dagster projects keep one: a change to
keys, lineage, groups, kinds, owners, checks, automation or jobs shows up as a reviewed diff of
`tests/snapshots/asset_graph.json`. Code versions are left out: they are content digests that
change with every edit."""

from __future__ import annotations

from typing import Any

import dagster as dg

from tests.support.paths import REPO

SNAPSHOT = REPO / "tests" / "snapshots" / "asset_graph.json"
UPDATE_ENV = "SOPHIA_UPDATE_SNAPSHOTS"


def graph_snapshot(defs: dg.Definitions) -> dict[str, Any]:
    graph = defs.resolve_asset_graph()
    checks: dict[str, list[str]] = {}
    for check in graph.asset_check_keys:
        checks.setdefault(check.asset_key.to_user_string(), []).append(check.name)
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        name = key.to_user_string()
        condition = node.automation_condition
        assets[name] = {
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "group": node.group_name,
            "kinds": sorted(
                t.rsplit("/", 1)[-1] for t in node.tags if t.startswith("dagster/kind/")
            ),
            "owners": list(node.owners),
            "materializable": node.is_materializable,
            "checks": sorted(checks.get(name, [])),
            "automation": condition.get_label() or type(condition).__name__ if condition else None,
            "freshness": node.freshness_policy is not None,
        }
    return {
        "assets": assets,
        "jobs": sorted(
            job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__")
        ),
        "sensors": {s.name: s.default_status.value for s in defs.sensors or []},
        "schedules": {s.name: s.cron_schedule for s in defs.schedules or []},
    }
