"""Checks on the images: the Dockerfile passes hadolint and our rules, and the last built image
was built from the context as it is now (image matches code)."""

import dagster as dg

from sophia_assets.images.config import ImageConfig
from sophia_assets.images.rules import check_dockerfile, failing


def dockerfile_check(image: ImageConfig) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=image.asset_key,
        name="dockerfile_rules",
        description="hadolint, pinned base images, a non-root user, no secrets in ENV/ARG.",
    )
    def _check() -> dg.AssetCheckResult:
        findings = check_dockerfile(image.dockerfile, [image.target])
        failed = failing(findings)
        return dg.AssetCheckResult(
            passed=not failed,
            description="; ".join(map(str, failed)) or None,
            metadata={
                "failing": len(failed),
                "findings": len(findings),
                "report": "\n".join(map(str, findings)) or "clean",
            },
        )

    return _check


def matches_code_check(image: ImageConfig) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=image.asset_key,
        name="image_matches_code",
        description="The last build's context digest equals the current one.",
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        current = image.build_context.digest()
        event = context.instance.get_latest_materialization_event(image.asset_key)
        built = None
        if event and event.asset_materialization:
            entry = event.asset_materialization.metadata.get("context_digest")
            built = entry.value if entry else None
        if built is None:
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"{image.asset_key.to_user_string()} was never built; materialize it",
                metadata={"current_context_digest": current},
            )
        return dg.AssetCheckResult(
            passed=built == current,
            description=None
            if built == current
            else "the code changed since the image was built; rebuild it",
            metadata={"current_context_digest": current, "built_context_digest": built},
        )

    return _check
