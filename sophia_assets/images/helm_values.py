"""The Dagster Helm chart's values (deploy/helm/values.yaml) pinned to one built image: what
both deploy/helm_values and the Pulumi `dagster` stack deploy."""

from __future__ import annotations

import yaml

from sophia_assets.home import PROJECT_ROOT

HELM_VALUES = PROJECT_ROOT / "deploy" / "helm" / "values.yaml"


def chart_values(image: str) -> dict:
    """The values with `repository:tag@digest` split into each user deployment's image."""
    values = yaml.safe_load(HELM_VALUES.read_text())
    name, _, digest = image.partition("@")
    repository, _, tag = name.rpartition(":")
    for deployment in values["dagster-user-deployments"]["deployments"]:
        deployment["image"].update(repository=repository, tag=f"{tag}@{digest}" if digest else tag)
    return values
