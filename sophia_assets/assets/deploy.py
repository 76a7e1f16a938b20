"""deploy/helm_values: the Dagster Helm chart's values with the last built code location image.

Downstream of images/code-location, so the lineage reads image -> deployment, and a rebuilt
image marks the deployment values stale. The rendered file is what `helm upgrade -f` takes.
"""

import dagster as dg
import yaml

from sophia_assets.home import PROJECT_ROOT, sophia_home

HELM_VALUES = PROJECT_ROOT / "deploy" / "helm" / "values.yaml"


def helm_values_asset(image_key: dg.AssetKey) -> dg.AssetsDefinition:
    @dg.asset(
        key=dg.AssetKey(["deploy", "helm_values"]),
        deps=[image_key],
        group_name="deployment",
        kinds={"helm", "kubernetes"},
        description="Values for the Dagster Helm chart, pinned to the last built code "
        "location image (deploy/helm/values.yaml with the image filled in).",
    )
    def _helm_values(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        image = _built_image(context.instance, image_key)
        repository, _, tag = image.partition("@")[0].rpartition(":")
        digest = image.partition("@")[2]
        values = yaml.safe_load(HELM_VALUES.read_text())
        for deployment in values["dagster-user-deployments"]["deployments"]:
            deployment["image"].update(repository=repository, tag=f"{tag}@{digest}")
        target = sophia_home() / "deploy" / "helm-values.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(
            f"# Rendered from {HELM_VALUES.relative_to(PROJECT_ROOT)} by deploy/helm_values.\n"
            + yaml.safe_dump(values, sort_keys=False)
        )
        context.log.info(f"wrote {target}: helm upgrade --install dagster dagster/dagster -f it")
        return dg.MaterializeResult(
            metadata={"path": str(target), "image": image},
            data_version=dg.DataVersion(digest),
        )

    return _helm_values


def _built_image(instance: dg.DagsterInstance, image_key: dg.AssetKey) -> str:
    event = instance.get_latest_materialization_event(image_key)
    entry = event.asset_materialization.metadata.get("image") if event else None
    if entry is None:
        raise dg.Failure(
            f"{image_key.to_user_string()} has never been built; materialize it first "
            f"(dagster asset materialize -m sophia_assets.definitions "
            f"--select {image_key.to_user_string()})"
        )
    return entry.value
