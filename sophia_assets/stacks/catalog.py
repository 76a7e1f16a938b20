"""The platform's stacks: each Pulumi program under infra/, the image it deploys (its
upstream asset) and the stack config key that receives that image's reference."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg


@dataclass(frozen=True)
class StackSpec:
    name: str
    module: str  # infra.<program>, with a `program()` function
    image: dg.AssetKey
    image_config: str | None  # config key that gets `repository:tag@digest`
    description: str

    @property
    def asset_key(self) -> dg.AssetKey:
        return dg.AssetKey(["infra", self.name])

    def program(self) -> Callable[[], None]:
        return importlib.import_module(self.module).program


N8N_IMAGE = dg.AssetKey(["images", "n8n"])  # the vendor's image, pinned in infra/n8n.py
STACKS = [
    StackSpec(
        "n8n",
        "infra.n8n",
        N8N_IMAGE,
        None,
        "n8n in queue mode on Kubernetes: main, workers (HPA 2..20), Redis, policies.",
    ),
    StackSpec(
        "dagster",
        "infra.dagster_deployment",
        dg.AssetKey(["images", "code-location"]),
        "codeLocationImage",
        "The code location on the Dagster Helm chart, with the platform's secrets.",
    ),
    StackSpec(
        "gpu-embedding",
        "infra.gpu_embedding",
        dg.AssetKey(["images", "gpu-embedding"]),
        None,
        "What the Lambda GPU runner needs: its SSH key and file system, as outputs.",
    ),
    StackSpec(
        "search-api",
        "infra.search_api",
        dg.AssetKey(["images", "code-location"]),
        "searchApiImage",
        "The search API (`sophia api serve`) from the code-location image: HPA on CPU, "
        "readiness on /readyz, only the ingress namespace admitted.",
    ),
]


def n8n_image_spec() -> dg.AssetSpec:
    return dg.AssetSpec(
        N8N_IMAGE,
        group_name="images",
        kinds={"docker"},
        description="n8n's own image (n8nio/n8n:2.41.1), deployed by infra/n8n.",
    )
