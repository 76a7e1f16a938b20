"""Container images in tests: a small project, a stand-in `docker` that checks the buildx flags
it receives and writes buildx's metadata file, and helpers to build and read staleness."""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg

from resources.image_builder import ImageBuilderResource
from sophia_assets.images.config import ImageConfig

PROJECT = {
    "Dockerfile": "FROM python:3.11.14-slim-bookworm\n"
    "RUN --mount=type=bind,source=uv.lock,target=uv.lock true\n"
    "COPY pyproject.toml ./\nCOPY pkg ./pkg\nUSER 10001:10001\n",
    ".dockerignore": ".sophia\ntests\n**/__pycache__\n",
    "pyproject.toml": "[project]\nname = 'x'\n",
    "uv.lock": "version = 1\n",
    "pkg/a.py": "A = 1\n",
    "pkg/__pycache__/a.cpython-311.pyc": "bytecode",
    "tests/test_a.py": "def test(): pass\n",
    ".sophia/state": "local state",
    "notes.md": "not read by the Dockerfile",
}


STUB = f"""#!{sys.executable}
import hashlib, json, os, sys
args = sys.argv[1:]
with open(os.environ["STUB_RECORD"], "w") as f:
    json.dump(args, f)
required = ["buildx", "build", "--push", "--provenance=mode=max", "--sbom=true",
            "--metadata-file", "--builder", "--progress=plain"]
missing = [flag for flag in required if flag not in args]
if missing:
    print("stub docker: missing " + " ".join(missing), file=sys.stderr)
    sys.exit(2)
mode = os.environ.get("STUB_MODE", "ok")
print("#1 [internal] load build definition from Dockerfile")
print("#1 DONE 0.0s")
for step in range(2, 62):
    print(f"#{{step}} [build {{step}}/61] RUN step {{step}}")
    print(f"#{{step}} CACHED" if step % 3 else f"#{{step}} DONE 0.1s")
print("STUB-LOG-MARKER pushing layers")
if mode == "fail":
    print("ERROR: failed to solve: process did not complete successfully: exit code: 1")
    sys.exit(1)
if mode != "no-metadata":
    tags = [args[i + 1] for i, a in enumerate(args) if a == "--tag"]
    with open(args[args.index("--metadata-file") + 1], "w") as f:
        digest = "sha256:" + hashlib.sha256(tags[0].encode()).hexdigest()
        json.dump({{"containerimage.digest": digest,
                   "image.name": ",".join(tags),
                   "buildx.build.ref": "cloud-acme-sophia/cloud-acme-sophia0/abc"}}, f)
"""


BUILDER = ImageBuilderResource(builder="cloud-acme-sophia", registry="acme")


def app_image(project: Path) -> ImageConfig:
    return ImageConfig(
        name="app",
        dockerfile=project / "Dockerfile",
        context=project,
        repository="sophia-app",
        platforms=("linux/amd64", "linux/arm64"),
    )


def build_images(assets, instance, builder=BUILDER, **kwargs):
    return dg.materialize(assets, instance=instance, resources={"image_builder": builder}, **kwargs)


def stale_status(instance, assets, resources=None) -> dict[dg.AssetKey, tuple]:
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._core.loader import LoadingContextForTest

    graph = dg.Definitions(
        assets=assets, resources={"image_builder": BUILDER, **(resources or {})}
    ).resolve_asset_graph()
    resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
    return {
        key: (
            resolver.get_status(key).value,
            [cause.category.value for cause in resolver.get_stale_causes(key)],
        )
        for key in graph.materializable_asset_keys
    }
