"""The code location: one Definitions assembled from the catalog, resources and jobs.

Heavy libraries (torch, sentence-transformers, pulumi) are imported where they are used, never
here, because every run process loads this module.
"""

from __future__ import annotations

import dagster as dg

from resources.flow_runtime import FlowRuntimeResource
from resources.postgres import PostgresResource
from sophia_assets.assets.cdc import capture_asset
from sophia_assets.catalog import load_catalog
from sophia_assets.catalog.translator import FlowTranslator
from sophia_assets.checks.cdc_latency import latency_check
from sophia_assets.demo.seed_job import demo_seed_job
from sophia_assets.flow.runtime import runnable_captures
from sophia_assets.home import flow_specs_dir

catalog = load_catalog(flow_specs_dir())
specs = {spec.key: spec for spec in FlowTranslator(catalog).build_specs()}

# Captures the local flow runtime can run become materializable; the other catalog nodes stay
# external until their issues give them compute: nothing pretends to materialize.
captures = [capture_asset(c, catalog, specs) for c in runnable_captures(catalog)]
captured = {key for assets_def in captures for key in assets_def.keys}

main_job = dg.define_asset_job(
    "main",
    selection=dg.AssetSelection.assets(*captured),
    description="The data path on the configured backends: capture (embed and index follow).",
)

postgres = PostgresResource()
defs = dg.Definitions(
    assets=[*captures, *(spec for key, spec in specs.items() if key not in captured)],
    asset_checks=[latency_check(key) for key in sorted(captured)],
    jobs=[demo_seed_job, main_job],
    resources={"postgres": postgres, "flow_runtime": FlowRuntimeResource(postgres=postgres)},
)
