"""images/<name>: one asset per image in deploy/images.yaml.

The code version is the digest of the build context the Dockerfile really uses, so the UI
marks an image stale exactly when its inputs changed. Materializing builds and pushes it on
the configured Build Cloud builder and records the context digest it was built from.
"""

import dagster as dg

from resources.image_builder import ImageBuilderResource
from sophia_assets.home import sophia_home
from sophia_assets.images.config import ImageConfig

# Opt-in per image (`rebuild_on_change`): a new context digest requests one rebuild.
REBUILD_ON_CHANGE = (
    dg.AutomationCondition.code_version_changed().since_last_handled()
    & ~dg.AutomationCondition.in_progress()
)


def image_asset(image: ImageConfig) -> dg.AssetsDefinition:
    @dg.asset(
        key=image.asset_key,
        group_name="images",
        kinds={"docker"},
        code_version=image.build_context.digest(),
        automation_condition=REBUILD_ON_CHANGE if image.rebuild_on_change else None,
        description=image.description or f"Container image {image.repository}.",
        metadata={
            "dockerfile": str(image.dockerfile.name),
            "target": image.target or "(last stage)",
            "repository": image.repository,
        },
    )
    def _image(
        context: dg.AssetExecutionContext, image_builder: ImageBuilderResource
    ) -> dg.MaterializeResult:
        # The digest at run time, not at load: the image is whatever the context holds now.
        context_digest = image.build_context.digest()
        workdir = sophia_home() / "images"
        workdir.mkdir(parents=True, exist_ok=True)
        context.log.info(f"building {image.name} from context digest {context_digest[:12]}")
        result = image_builder.build(image, context_digest, workdir, context.log.info)
        return dg.MaterializeResult(
            metadata={
                "context_digest": context_digest,
                "image_digest": result.digest,
                "tags": ", ".join(result.tags),
                "image": f"{result.tags[0]}@{result.digest}",
                "builder": image_builder.builder,
                "duration_s": result.duration_s,
                "steps": result.steps,
                "cached_steps": result.cached_steps,
                "cache_ratio": round(result.cache_ratio, 3),
                "build_ref": result.build_ref or "",
            },
            data_version=dg.DataVersion(result.digest),
        )

    return _image
