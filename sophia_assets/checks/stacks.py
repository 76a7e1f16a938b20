"""stack_drift: `pulumi preview` against the live stack; any change means it drifted."""

import dagster as dg

from resources.pulumi_stacks import StackRunnerResource
from sophia_assets.assets.stacks import log_lines, stack_config
from sophia_assets.stacks.automation import PulumiMissing
from sophia_assets.stacks.catalog import StackSpec


def drift_check(stack: StackSpec) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=stack.asset_key,
        name="stack_drift",
        description="A preview of the program against the live stack shows no change.",
    )
    def _check(
        context: dg.AssetCheckExecutionContext, pulumi_stacks: StackRunnerResource
    ) -> dg.AssetCheckResult:
        try:
            preview = pulumi_stacks.runner().preview(
                stack, stack_config(context.instance, stack), log_lines(context)
            )
        except PulumiMissing as err:
            return dg.AssetCheckResult(passed=False, description=str(err))
        drifted = preview.drifted
        return dg.AssetCheckResult(
            passed=not drifted,
            description=None
            if not drifted
            else "the live stack differs from the program: "
            + ", ".join(f"{n} to {op}" for op, n in sorted(drifted.items())),
            metadata={"changes": dg.MetadataValue.json(preview.changes)},
        )

    return _check
