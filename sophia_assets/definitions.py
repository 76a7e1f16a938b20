"""The code location: one Definitions assembled from the catalog, resources and jobs.

Heavy libraries (torch, sentence-transformers, pulumi) are imported where they are used, never
here, because every run process loads this module.
"""

from __future__ import annotations

import dagster as dg

from resources.postgres import PostgresResource
from sophia_assets.catalog import load_catalog
from sophia_assets.catalog.translator import FlowTranslator
from sophia_assets.demo.seed_job import demo_seed_job
from sophia_assets.home import flow_specs_dir

catalog = load_catalog(flow_specs_dir())

defs = dg.Definitions(
    # Until the flow runtime and the embedder give them compute, the catalog's nodes are
    # external assets: the graph shows lineage, and nothing pretends to materialize.
    assets=FlowTranslator(catalog).build_specs(),
    jobs=[demo_seed_job],
    resources={"postgres": PostgresResource()},
)
