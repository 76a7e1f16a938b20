"""The images the platform builds, read from `deploy/images.yaml` (`SOPHIA_IMAGES` overrides)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import yaml

from sophia_assets.home import PROJECT_ROOT
from sophia_assets.images.context import BuildContext

IMAGES_FILE = PROJECT_ROOT / "deploy" / "images.yaml"
_FIELDS = {
    "name",
    "dockerfile",
    "context",
    "target",
    "repository",
    "platforms",
    "rebuild_on_change",
    "description",
    "runs",
}
# What an image runs (`runs:` in images.yaml): the Dagster deployment's code location (the
# image the Helm values pin), or the GPU embedding entrypoint.
CODE_LOCATION = "code-location"
GPU_EMBEDDING = "gpu-embedding"
ROLES = (CODE_LOCATION, GPU_EMBEDDING)


@dataclass(frozen=True)
class ImageConfig:
    name: str
    dockerfile: Path
    context: Path
    repository: str
    target: str | None = None
    platforms: tuple[str, ...] = ("linux/amd64",)
    rebuild_on_change: bool = False
    description: str = ""
    runs: str | None = None

    @property
    def asset_key(self) -> dg.AssetKey:
        return dg.AssetKey(["images", self.name])

    @property
    def build_context(self) -> BuildContext:
        return BuildContext(self.context, self.dockerfile)


def load_images(path: Path | None = None) -> list[ImageConfig]:
    path = Path(path or os.environ.get("SOPHIA_IMAGES") or IMAGES_FILE)
    entries = (yaml.safe_load(path.read_text()) or {}).get("images") or []
    images = []
    for index, entry in enumerate(entries):
        where = f"{path}: images[{index}]"
        unknown = set(entry) - _FIELDS
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        missing = {"name", "dockerfile", "repository"} - set(entry)
        if missing:
            raise ValueError(f"{where}: missing {', '.join(sorted(missing))}")
        # Relative paths are from the repository root; absolute ones stand.
        root = PROJECT_ROOT
        context = (root / entry.get("context", ".")).resolve()
        dockerfile = (root / entry["dockerfile"]).resolve()
        if not dockerfile.is_file():
            raise ValueError(f"{where}.dockerfile: {dockerfile} does not exist")
        if entry.get("runs") not in (None, *ROLES):
            raise ValueError(f"{where}.runs: {entry['runs']!r} is not one of {', '.join(ROLES)}")
        images.append(
            ImageConfig(
                name=str(entry["name"]),
                dockerfile=dockerfile,
                context=context,
                repository=str(entry["repository"]),
                target=entry.get("target"),
                platforms=tuple(entry.get("platforms") or ("linux/amd64",)),
                rebuild_on_change=bool(entry.get("rebuild_on_change", False)),
                description=str(entry.get("description", "")),
                runs=entry.get("runs"),
            )
        )
    names = [i.name for i in images]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise ValueError(f"{path}: image names must be unique; repeated: {sorted(duplicated)}")
    deployed = [i.name for i in images if i.runs == CODE_LOCATION]
    if len(deployed) > 1:
        raise ValueError(f"{path}: only one image may run the code location; found {deployed}")
    return images


def deployment_image(images: list[ImageConfig]) -> ImageConfig | None:
    """The image the Dagster deployment runs (code server and runs), if one is declared."""
    return next((i for i in images if i.runs == CODE_LOCATION), None)
