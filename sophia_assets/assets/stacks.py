"""infra/<stack>: one asset per Pulumi stack, downstream of the image it deploys.

Materializing runs `up` through the Automation API, streams Pulumi's output into the run and
reports the outputs (secrets masked), resource counts and the change summary. A rebuilt image
(a new digest, its data version) marks the stacks that deploy it stale."""

from collections.abc import Callable

import dagster as dg

from resources.pulumi_stacks import StackRunnerResource
from sophia_assets.images.built import built_image
from sophia_assets.stacks.automation import PulumiMissing
from sophia_assets.stacks.catalog import StackSpec


def stack_config(instance: dg.DagsterInstance, stack: StackSpec) -> dict[str, str]:
    """The stack config the platform supplies: the reference of the image it deploys."""
    if stack.image_config is None:
        return {}
    return {
        stack.image_config: built_image(instance, stack.image, stack.asset_key.to_user_string())
    }


def log_lines(context) -> Callable[[str], None]:
    def forward(text: str) -> None:
        for line in text.splitlines():
            if line.strip():
                context.log.info(line.rstrip())

    return forward


def stack_asset(stack: StackSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=stack.asset_key,
        deps=[stack.image],
        group_name="infra",
        kinds={"pulumi", "lambda" if stack.name == "gpu-embedding" else "kubernetes"},
        description=stack.description,
    )
    def _up(
        context: dg.AssetExecutionContext, pulumi_stacks: StackRunnerResource
    ) -> dg.MaterializeResult:
        config = stack_config(context.instance, stack)
        try:
            result = pulumi_stacks.runner().up(stack, config, log_lines(context))
        except PulumiMissing as err:
            raise dg.Failure(f"{stack.asset_key.to_user_string()}: {err}") from None
        metadata = {
            "outputs": dg.MetadataValue.json(result.masked_outputs()),
            "resources": result.resources,
            "changes": dg.MetadataValue.json(result.changes),
        }
        metadata.update({f"config/{k}": v for k, v in config.items()})
        return dg.MaterializeResult(metadata=metadata)

    return _up
