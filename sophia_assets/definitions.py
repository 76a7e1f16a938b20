"""The code location: one Definitions, read top-down as the platform.

catalog (flow_specs/) -> data path (captures, embedding derivations, vector indexes, with the
platform's freshness policy applied once over them) -> images and the deployment -> stacks and
secrets -> automation (sensors, schedules) -> resources.

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
from resources.pushgateway import PushgatewayResource
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
from sophia_assets.checks.embedding_lag import embedding_lag_check
from sophia_assets.checks.embeddings import consistency_check, coverage_check, dimension_check
from sophia_assets.checks.images import dockerfile_check, matches_code_check
from sophia_assets.checks.searchable_latency import searchable_latency_check
from sophia_assets.checks.secrets import secret_age_check
from sophia_assets.checks.stacks import drift_check
from sophia_assets.flow.runtime import runnable_captures
from sophia_assets.freshness import FRESHNESS
from sophia_assets.home import flow_specs_dir
from sophia_assets.images.config import deployment_image, load_images
from sophia_assets.jobs.demo_seed import demo_seed_job
from sophia_assets.jobs.run_metrics import run_metrics_hook
from sophia_assets.stacks.catalog import STACKS, n8n_image_spec

# -- the catalog ------------------------------------------------------------------------------

catalog = load_catalog(flow_specs_dir())
translator = FlowTranslator(catalog)
specs = {spec.key: spec for spec in translator.build_specs()}

# -- the data path: captures -> embedding derivations -> vector indexes --------------------------

# Captures the local flow runtime can run become materializable; so do the embedding
# derivations and the vector indexes they feed. Anything else stays an external asset.
runnable = runnable_captures(catalog)
captured = {translator.collection_key(b.target) for c in runnable for b in c.bindings}
derivations = catalog.embedding_derivations()
embedded = {translator.collection_key(c.name) for c in derivations}
index_targets = {
    translator.target_key(m, b): (b.source, m.index_name(b))
    for m, b in catalog.vector_index_bindings()
    if translator.collection_key(b.source) in embedded
}
indexed = set(index_targets)
data_path = captured | embedded | indexed

# Global policy, applied once: everything on the data path must stay fresh.
specs = {
    key: spec.replace_attributes(freshness_policy=FRESHNESS) if key in data_path else spec
    for key, spec in specs.items()
}

embedder = EmbedderResource()
captures = [capture_asset(c, catalog, specs) for c in runnable]
derived = [
    vector_updates_asset(catalog, specs[translator.collection_key(c.name)], embedder.card().version)
    for c in derivations
]
# eager(): the index runs when its vector updates have a new materialization and it has not run
# since; it never starts a run on a tick when nothing changed.
INDEX_FOLLOWS = dg.AutomationCondition.eager()
indexes = [
    vector_index_asset(
        specs[key].replace_attributes(automation_condition=INDEX_FOLLOWS), source, index_name
    )
    for key, (source, index_name) in index_targets.items()
]

# With SOPHIA_PUSHGATEWAY_URL set, the data-path jobs push each step's figures.
run_metrics = run_metrics_hook([*captures, *derived, *indexes])
main_job = dg.define_asset_job(
    "main",
    selection=dg.AssetSelection.assets(*data_path),
    description="The data path on the configured backends: capture, embed, index.",
    hooks={run_metrics},
)
drain_job = dg.define_asset_job(
    "drain",
    selection=dg.AssetSelection.assets(*captured),
    tags={"sophia/capture": "drain"},  # one drain at a time (dagster.yaml)
    description="Drains the captures up to now.",
)
embed_job = dg.define_asset_job(
    "embed",
    selection=dg.AssetSelection.assets(*embedded),
    description="Embeds what changed in the captured collections (the index follows by "
    "declarative automation); a sensor's run selects its one derivation.",
    hooks={run_metrics},
)
reindex_job = dg.define_asset_job(
    "reindex",
    selection=dg.AssetSelection.assets(*indexed),
    description="Applies pending vector updates to the index.",
)

# -- images and the deployment that runs the code location's --------------------------------------

images = load_images()
deployed = deployment_image(images)
images_job = dg.define_asset_job(
    "images",
    selection=dg.AssetSelection.assets(*(image.asset_key for image in images)),
    description="Builds and pushes images on Docker Build Cloud (a run request may select one).",
)

# -- infrastructure stacks (infra/), each downstream of the image it deploys -------------------

stacks_job = dg.define_asset_job(
    "stacks",
    selection=dg.AssetSelection.assets(*(stack.asset_key for stack in STACKS)),
    description="Deploys the Pulumi stacks (a run request may select one).",
)

# -- automation: outside events and declarative conditions -----------------------------------------

# One Estuary sensor per embedding derivation, watching the collection it derives from.
estuary_sensors = [
    build_estuary_sensor(
        translator.collection_key(c.derivation.transforms[0].source),
        translator.collection_key(c.name),
        embed_job,
        name=None if len(derivations) == 1 else "estuary__" + c.name.replace("/", "__"),
        indexes={key: name for key, (source, name) in index_targets.items() if source == c.name},
    )
    for c in derivations
]
# n8n workflows from sensors/n8n_workflows.yaml: external assets, and the sensor watching them.
workflows = load_workflows(
    images=[image.name for image in images], stacks=[stack.name for stack in STACKS]
)
actions = [embed_job, reindex_job, drain_job, images_job, stacks_job]
# Rented GPUs: the Lambda runner and its janitor when SOPHIA_LAMBDA_API_KEY is set.
lambda_configured = bool(os.environ.get(API_KEY_ENV))
# The index follows its vector updates; this sensor runs from the start (Dagster's default
# automation sensor starts stopped).
automation = dg.AutomationConditionSensorDefinition(
    "sophia_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=5,
    description="Evaluates the assets' automation conditions every 5 s: the vector index "
    "follows its vector updates (eager); nothing else here starts a run on its own.",
)

# -- resources ----------------------------------------------------------------------------------

postgres = PostgresResource()
resources = {
    "postgres": postgres,
    "flow_runtime": FlowRuntimeResource(postgres=postgres),
    "embedder": embedder,
    "gpu_runner": configured_runner(),
    "vector_index": configured_index(postgres),
    "image_builder": ImageBuilderResource.from_environment(),
    "secret_store": SecretStoreResource(),
    "pulumi_stacks": PulumiStacksResource(),
    # With SOPHIA_ESC_ENVIRONMENT set, a run opens that Pulumi ESC environment once and takes
    # its environmentVariables (the production URL and keys).
    "esc": EscResource.from_environment(),
    "n8n": N8nResource(base_url=os.environ.get("SOPHIA_N8N_URL", "http://127.0.0.1:5678")),
    "pushgateway": PushgatewayResource(),
}

# Global policy, applied once: every asset has an owner; what the catalog does not own (images,
# stacks, secrets, the workflows, the GPUs) is the platform team's.
PLATFORM_OWNER = "team:platform"


def _owned(spec: dg.AssetSpec) -> dg.AssetSpec:
    return spec if spec.owners else spec.replace_attributes(owners=[PLATFORM_OWNER])


defs = dg.Definitions(
    assets=dg.map_asset_specs(
        _owned,
        [
            *captures,
            *derived,
            *indexes,
            *(spec for key, spec in specs.items() if key not in data_path),
            *(image_asset(image) for image in images),
            *([helm_values_asset(deployed.asset_key)] if deployed else []),
            n8n_image_spec(),
            *(stack_asset(stack) for stack in STACKS),
            capture_login,
            *workflow_specs(workflows),
            *([gpu_instances_spec()] if lambda_configured else []),
        ],
    ),
    asset_checks=[
        *(latency_check(key) for key in sorted(captured)),
        *(coverage_check(catalog, key) for key in sorted(embedded)),
        *(
            embedding_lag_check(
                translator.collection_key(c.name), c.derivation.transforms[0].source
            )
            for c in derivations
        ),
        *(
            check(key, source, index_name)
            for key, (source, index_name) in index_targets.items()
            for check in (consistency_check, dimension_check)
        ),
        *(searchable_latency_check(key, name) for key, (_, name) in index_targets.items()),
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
        *estuary_sensors,
        build_n8n_sensor(workflows, actions),  # stopped, saying why, when none is listed
        *([build_janitor_sensor()] if lambda_configured else []),
        automation,
    ],
    resources=resources,
)
