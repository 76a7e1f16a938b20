"""A success hook on the data-path jobs (`main`, `embed`): each asset step pushes its
figures to the Pushgateway (resources/pushgateway.py) when one is configured, so Prometheus
sees batch runs as it sees `sophia flow serve`. One group per job and asset, replaced by
the next run's push."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import dagster as dg

from resources.pushgateway import PushgatewayResource
from sophia_assets.metrics.push import Figure

RUNS_JOB = "sophia-runs"  # the Pushgateway's job label of these groups


def run_figures(metadata: Mapping[str, dg.MetadataValue], finished_at: float) -> dict:
    """The step's figures, from the metadata its materialization reported: documents (a
    capture's journaled, a derivation's source documents, an index's upserts and deletes),
    rate and lag where the step reports them."""
    values = {k: v.value for k, v in metadata.items() if isinstance(v.value, int | float)}
    figures = {
        "sophia_run_last_success_timestamp_seconds": Figure(
            "When a run last materialized the asset (Unix time).", finished_at
        )
    }
    documents = values.get("documents", values.get("source_documents"))
    if documents is None and "upserts" in values:
        documents = values["upserts"] + values.get("deletes", 0)
    if documents is not None:
        figures["sophia_run_documents"] = Figure("Documents the run processed.", documents)
    if "documents_per_s" in values:
        figures["sophia_run_documents_per_second"] = Figure(
            "Documents embedded per second by the run.", values["documents_per_s"]
        )
    if "lag_documents" in values:
        figures["sophia_run_lag_documents"] = Figure(
            "Documents still to apply when the run finished.", values["lag_documents"]
        )
    return figures


def run_metrics_hook(assets: Iterable[dg.AssetsDefinition]) -> dg.HookDefinition:
    """The hook, knowing which asset each step output is (an output name is not a key)."""
    keys = {name: key for a in assets for name, key in a.keys_by_output_name.items()}

    @dg.success_hook(name="push_run_metrics", required_resource_keys={"pushgateway"})
    def _push(context: dg.HookContext) -> None:
        pushgateway: PushgatewayResource = context.resources.pushgateway
        if not pushgateway.configured:
            return
        finished = time.time()
        for output, metadata in context.op_output_metadata.items():
            key = keys.get(output)
            if key is None or not isinstance(metadata, Mapping):
                continue
            asset = key.to_user_string()
            grouping = {"dagster_job": context.job_name, "asset": asset}
            if pushgateway.push(RUNS_JOB, grouping, run_figures(metadata, finished)):
                context.log.info(f"pushed the figures of {asset} to the Pushgateway")

    return _push
