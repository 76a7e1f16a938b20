"""Docker Build Cloud: builds and pushes an image with `docker buildx build --builder cloud-...`.

The builder and the registry come from configuration or the environment
(`SOPHIA_BUILDX_BUILDER`, `SOPHIA_IMAGE_REGISTRY`); credentials stay with the Docker client
(`docker login`), never here. Without a builder a build fails with the commands that set one
up: nothing pretends to have built.
"""

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from sophia_assets.images.buildx import BuildRequest, BuildResult, run_build
from sophia_assets.images.config import ImageConfig

SETUP = """Set up a Docker Build Cloud builder once, then build again:
  docker login                                  # an account of the Build Cloud organisation
  docker buildx create --driver cloud ORG/NAME  # registers the builder cloud-ORG-NAME
  export SOPHIA_BUILDX_BUILDER=cloud-ORG-NAME
  export SOPHIA_IMAGE_REGISTRY=ORG              # or any registry/namespace you can push to"""


class ImageBuilderError(RuntimeError):
    """The build cannot start: no builder, no registry or no docker client."""


class ImageBuilderResource(dg.ConfigurableResource):
    """Builds images on a Build Cloud builder and pushes them to the registry."""

    builder: str = ""
    registry: str = ""
    docker: str = "docker"

    @classmethod
    def from_environment(cls) -> "ImageBuilderResource":
        return cls(
            builder=os.environ.get("SOPHIA_BUILDX_BUILDER", ""),
            registry=os.environ.get("SOPHIA_IMAGE_REGISTRY", ""),
            docker=os.environ.get("SOPHIA_DOCKER", "docker"),
        )

    def tags(self, image: ImageConfig, context_digest: str) -> tuple[str, ...]:
        return (f"{self.registry.rstrip('/')}/{image.repository}:{context_digest[:12]}",)

    def request(self, image: ImageConfig, context_digest: str, workdir: Path) -> BuildRequest:
        missing = [
            name
            for name, value in (
                ("SOPHIA_BUILDX_BUILDER", self.builder),
                ("SOPHIA_IMAGE_REGISTRY", self.registry),
            )
            if not value
        ]
        if missing:
            raise ImageBuilderError(
                f"images/{image.name}: {' and '.join(missing)} not set. {SETUP}"
            )
        docker = shutil.which(self.docker)
        if docker is None:
            raise ImageBuilderError(
                f"images/{image.name}: the docker client ({self.docker}) is not on PATH; "
                "install Docker with the buildx plugin"
            )
        return BuildRequest(
            docker=docker,
            builder=self.builder,
            dockerfile=image.dockerfile,
            context=image.context,
            tags=self.tags(image, context_digest),
            target=image.target,
            platforms=image.platforms,
            metadata_file=workdir / f"{image.name}.metadata.json",
        )

    def build(
        self, image: ImageConfig, context_digest: str, workdir: Path, log: Callable[[str], None]
    ) -> BuildResult:
        return run_build(self.request(image, context_digest, workdir), log)
