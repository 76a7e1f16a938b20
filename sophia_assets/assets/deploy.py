"""deploy/helm_values: the Dagster Helm chart's values with the last built code location image.

Downstream of images/code-location, so the lineage reads image -> deployment, and a rebuilt
image marks the deployment values stale. The rendered file is what `helm upgrade -f` takes.
"""

import dagster as dg
import yaml

from sophia_assets.home import PROJECT_ROOT, sophia_home
from sophia_assets.images.built import built_image
from sophia_assets.images.helm_values import HELM_VALUES, chart_values


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
        image = built_image(context.instance, image_key, "deploy/helm_values")
        values = chart_values(image)
        target = sophia_home() / "deploy" / "helm-values.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(
            f"# Rendered from {HELM_VALUES.relative_to(PROJECT_ROOT)} by deploy/helm_values.\n"
            + yaml.safe_dump(values, sort_keys=False)
        )
        context.log.info(f"wrote {target}: helm upgrade --install dagster dagster/dagster -f it")
        return dg.MaterializeResult(
            metadata={"path": str(target), "image": image},
            data_version=dg.DataVersion(image.partition("@")[2]),
        )

    return _helm_values
