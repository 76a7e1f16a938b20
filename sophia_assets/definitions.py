"""The code location: one Definitions assembled from the catalog, resources and jobs.

Heavy libraries (torch, sentence-transformers, pulumi) are imported where they are used, never
here, because every run process loads this module.
"""

from __future__ import annotations

import os

import dagster as dg

from resources.embedder import EmbedderResource
from resources.esc import EscResource
from resources.flow_runtime import FlowRuntimeResource
from resources.gpu_runner import API_KEY_ENV, configured_runner
from resources.image_builder import ImageBuilderResource
from resources.n8n import N8nResource
from resources.postgres import PostgresResource
from resources.pulumi_stacks import PulumiStacksResource
from resources.secret_store import SecretStoreResource
from resources.vector_index import configured_index
from sensors.estuary import build_estuary_sensor
from sensors.lambda_janitor import build_janitor_sensor, gpu_instances_spec
from sensors.n8n import build_n8n_sensor, load_workflows, workflow_specs
from sophia_assets.assets.cdc import capture_asset
from sophia_assets.assets.deploy import helm_values_asset
from sophia_assets.assets.embeddings import vector_index_asset, vector_updates_asset
from sophia_assets.assets.images import image_asset
from sophia_assets.assets.secrets import (
    MANAGED,
    capture_login,
    rotate_secrets_job,
    rotate_secrets_schedule,
)
from sophia_assets.assets.stacks import stack_asset
from sophia_assets.catalog import load_catalog
from sophia_assets.catalog.translator import FlowTranslator
from sophia_assets.checks.cdc_latency import latency_check
from sophia_assets.checks.embeddings import consistency_check, coverage_check, dimension_check
from sophia_assets.checks.images import dockerfile_check, matches_code_check
from sophia_assets.checks.secrets import secret_age_check
from sophia_assets.checks.stacks import drift_check
from sophia_assets.flow.runtime import runnable_captures
from sophia_assets.freshness import FRESHNESS
from sophia_assets.home import flow_specs_dir
from sophia_assets.images.config import load_images
from sophia_assets.jobs.demo_seed import demo_seed_job
from sophia_assets.stacks.catalog import STACKS, n8n_image_spec

# eager(): runs when vector_updates has a new materialization and the index has not run since;
# it never starts a run on a tick when nothing changed.
INDEX_FOLLOWS = dg.AutomationCondition.eager()

catalog = load_catalog(flow_specs_dir())
specs = {spec.key: spec for spec in FlowTranslator(catalog).build_specs()}

# Captures the local flow runtime can run become materializable, and so do the embedding
# derivation and the vector index; anything else in the catalog stays an external asset.
captures = [capture_asset(c, catalog, specs) for c in runnable_captures(catalog)]
captured = {key for assets_def in captures for key in assets_def.keys}
embedder = EmbedderResource()
derived = [
    vector_updates_asset(
        catalog,
        specs[key].replace_attributes(freshness_policy=FRESHNESS),
        embedder.card().version,
    )
    for key in (
        dg.AssetKey(name.split("/"))
        for name, c in catalog.collections.items()
        if c.derivation and "embed" in str(c.derivation.using)
    )
]
embedded = {key for assets_def in derived for key in assets_def.keys}
indexes = [
    vector_index_asset(
        spec.replace_attributes(freshness_policy=FRESHNESS, automation_condition=INDEX_FOLLOWS),
        "/".join(next(iter(spec.deps)).asset_key.path),
    )
    for spec in specs.values()
    if spec.group_name == "vector_index" and {d.asset_key for d in spec.deps} <= embedded
]
computed = captured | embedded | {key for assets_def in indexes for key in assets_def.keys}

embed_job = dg.define_asset_job(
    "embed",
    selection=dg.AssetSelection.assets(*embedded),
    description="Embeds what changed in the captured collections (the index follows by "
    "declarative automation).",
)
reindex_job = dg.define_asset_job(
    "reindex",
    selection=dg.AssetSelection.assets(*(k for a in indexes for k in a.keys)),
    description="Applies pending vector updates to the index.",
)
drain_job = dg.define_asset_job(
    "drain",
    selection=dg.AssetSelection.assets(*captured),
    tags={"sophia/capture": "drain"},  # one drain at a time (dagster.yaml)
    description="Drains the captures up to now.",
)

main_job = dg.define_asset_job(
    "main",
    selection=dg.AssetSelection.assets(*computed),
    description="The data path on the configured backends: capture, embed, index.",
)

# Container images from deploy/images.yaml, and the deployment that uses the code location's.
images = load_images()
image_assets = [image_asset(image) for image in images]
deployment = [
    helm_values_asset(image.asset_key) for image in images if image.name == "code-location"
]
images_job = dg.define_asset_job(
    "images",
    selection=dg.AssetSelection.assets(*(image.asset_key for image in images)),
    description="Builds and pushes images on Docker Build Cloud (a run request may select one).",
)

# Rented GPUs: the Lambda runner and its janitor when SOPHIA_LAMBDA_API_KEY is set.
lambda_configured = bool(os.environ.get(API_KEY_ENV))

# Infrastructure stacks (infra/), each downstream of the image it deploys.
stack_assets = [stack_asset(stack) for stack in STACKS]
stacks_job = dg.define_asset_job(
    "stacks",
    selection=dg.AssetSelection.assets(*(stack.asset_key for stack in STACKS)),
    description="Deploys the Pulumi stacks (a run request may select one).",
)

# n8n workflows from sensors/n8n_workflows.yaml: external assets, and a sensor when any.
workflows = load_workflows(
    images=[image.name for image in images], stacks=[stack.name for stack in STACKS]
)

postgres = PostgresResource()
defs = dg.Definitions(
    assets=[
        *captures,
        *derived,
        *indexes,
        *(spec for key, spec in specs.items() if key not in computed),
        *workflow_specs(workflows),
        *image_assets,
        *deployment,
        capture_login,
        n8n_image_spec(),
        *stack_assets,
        *([gpu_instances_spec()] if lambda_configured else []),
    ],
    asset_checks=[
        *(latency_check(key) for key in sorted(captured)),
        *(coverage_check(catalog, key) for key in sorted(embedded)),
        *(
            check(key, "/".join(next(iter(a.specs)).deps[0].asset_key.path))
            for a in indexes
            for key in a.keys
            for check in (consistency_check, dimension_check)
        ),
        *(check(image) for image in images for check in (dockerfile_check, matches_code_check)),
        *(secret_age_check(key, secret) for key, secret in MANAGED.items()),
        *(drift_check(stack) for stack in STACKS),
    ],
    jobs=[
        demo_seed_job,
        main_job,
        embed_job,
        reindex_job,
        drain_job,
        images_job,
        stacks_job,
        rotate_secrets_job,
    ],
    schedules=[rotate_secrets_schedule],
    sensors=[
        *(
            build_estuary_sensor(key, next(iter(embedded)), embed_job)
            for key in sorted(captured)
            if embedded
        ),
        # The index follows its vector updates; the sensor runs from the start (Dagster's
        # default automation sensor starts stopped).
        *(
            [
                build_n8n_sensor(
                    workflows, [embed_job, reindex_job, drain_job, images_job, stacks_job]
                )
            ]
            if workflows
            else []
        ),
        *([build_janitor_sensor()] if lambda_configured else []),
        dg.AutomationConditionSensorDefinition(
            "sophia_automation",
            target=dg.AssetSelection.all(),
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=5,
        ),
    ],
    resources={
        "postgres": postgres,
        "flow_runtime": FlowRuntimeResource(postgres=postgres),
        "embedder": embedder,
        "gpu_runner": configured_runner(),
        "vector_index": configured_index(postgres),
        "image_builder": ImageBuilderResource.from_environment(),
        "secret_store": SecretStoreResource(),
        "pulumi_stacks": PulumiStacksResource(),
        # With SOPHIA_ESC_ENVIRONMENT set, a run opens that Pulumi ESC environment once and
        # takes its environmentVariables (the production URL and keys).
        "esc": EscResource.from_environment(),
        "n8n": N8nResource(base_url=os.environ.get("SOPHIA_N8N_URL", "http://127.0.0.1:5678")),
    },
)
