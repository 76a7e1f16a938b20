"""Container images: the context digest, the Dockerfile rules, and the build on Build Cloud with a
stand-in `docker` on PATH that checks the flags it receives and writes buildx's metadata file."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import dagster as dg
import pytest
import yaml

from resources.image_builder import ImageBuilderResource
from sophia_assets.assets.deploy import helm_values_asset
from sophia_assets.assets.images import image_asset
from sophia_assets.checks.images import dockerfile_check, matches_code_check
from sophia_assets.images.config import load_images
from sophia_assets.images.context import BuildContext
from sophia_assets.images.dockerignore import DockerIgnore
from sophia_assets.images.rules import check_dockerfile, failing
from tests.support.dagster_runs import step_failure
from tests.support.images import BUILDER, app_image, build_images, stale_status
from tests.support.paths import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()


def _pushed_digest(tag: str) -> str:
    """The digest the stand-in reports: a function of the tag, as a registry's would be of
    the image's content."""
    return "sha256:" + hashlib.sha256(tag.encode()).hexdigest()


# -- the context digest ------------------------------------------------------------------------


def _context(root: Path) -> BuildContext:
    return BuildContext(root, root / "Dockerfile")


@pytest.mark.parametrize(
    "changed",
    ["pkg/a.py", "uv.lock", "pyproject.toml", "Dockerfile", "pkg/new.py"],
    ids=["package source", "bind-mounted lock", "pyproject", "Dockerfile", "new source file"],
)
def test_digest_changes_with_a_file_the_build_reads(project: Path, changed: str) -> None:
    before = _context(project).digest()
    path = project / changed
    path.write_text((path.read_text() if path.exists() else "") + "# edit\n")
    assert _context(project).digest() != before


def test_digest_changes_when_a_file_becomes_executable(project: Path) -> None:
    before = _context(project).digest()
    path = project / "pkg/a.py"
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    assert _context(project).digest() != before


@pytest.mark.parametrize(
    "changed",
    ["tests/test_a.py", ".sophia/state", "pkg/__pycache__/a.cpython-311.pyc", "notes.md"],
    ids=["ignored tests", "ignored .sophia", "ignored cache", "never read"],
)
def test_digest_ignores_files_outside_the_used_context(project: Path, changed: str) -> None:
    before = _context(project).digest()
    (project / changed).write_text("changed")
    assert _context(project).digest() == before


def test_repository_context_holds_the_code_and_nothing_local() -> None:
    [image] = [i for i in load_images() if i.name == "code-location"]
    files = image.build_context.files()
    for expected in ("pyproject.toml", "uv.lock", "sophia_assets/definitions.py", "README.md"):
        assert expected in files
    assert any(f.startswith("resources/") for f in files)
    assert any(f.startswith("flow_specs/schemas/") for f in files)
    for path in files:
        assert not path.startswith(("tests/", ".sophia/", ".venv/", ".git/")), path
        assert "__pycache__" not in path, path


def test_dockerignore_exceptions_and_double_star() -> None:
    ignore = DockerIgnore(["*", "!pkg", "**/*.pyc", "pkg/private", "!pkg/private/keep.txt"])
    assert ignore.excludes("notes.md")
    assert not ignore.excludes("pkg/a.py")
    assert ignore.excludes("pkg/sub/a.pyc")
    assert ignore.excludes("pkg/private/key.pem")
    assert not ignore.excludes("pkg/private/keep.txt")  # the last match wins
    assert not ignore.prunes("pkg/private")  # an exception below it keeps the walk going


# -- Dockerfile rules --------------------------------------------------------------------------


def _findings(tmp_path: Path, text: str, targets=("runtime", "gpu")):
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    return check_dockerfile(path, list(targets))


def test_the_project_dockerfile_passes_every_rule(tmp_path: Path) -> None:
    assert _findings(tmp_path, DOCKERFILE) == []


RUNTIME_FROM = "FROM python:3.11.14-slim-bookworm AS runtime"


@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        (RUNTIME_FROM, "FROM python:3.11-slim AS runtime", "pinned-base-image"),
        (RUNTIME_FROM, "FROM python:latest AS runtime", "pinned-base-image"),
        (RUNTIME_FROM, "FROM python AS runtime", "pinned-base-image"),
        (
            "FROM astral/uv:0.11.7-python3.11-bookworm-slim AS build",
            "ARG UV=astral/uv:0.11.7-python3.11-bookworm-slim\nFROM ${UV} AS build",
            "pinned-base-image",
        ),
        (
            "WORKDIR /app\nRUN --mount=type=cache",
            "WORKDIR /app\nCOPY --from=astral/uv:latest /uv /bin/\nRUN --mount=type=cache",
            "pinned-base-image",
        ),
        ("USER 10001:10001\nEXPOSE", "EXPOSE", "non-root-user"),
        ("USER 10001:10001\nEXPOSE", "USER root\nEXPOSE", "non-root-user"),
        ("compute,utility\nUSER 10001:10001", "compute,utility\nUSER 0:0", "non-root-user"),
        ("    SOPHIA_HOME=/tmp/sophia", "    PINECONE_API_KEY=pk-123", "no-secret-in-env"),
        ("WORKDIR /app\nUSER", "ARG GITHUB_TOKEN\nWORKDIR /app\nUSER", "no-secret-in-env"),
        ("WORKDIR /app\nUSER", "ENV DB_PASSWORD hunter2\nWORKDIR /app\nUSER", "no-secret-in-env"),
        ("WORKDIR /app\nUSER", "WORKDIR /app\nRUN cd /tmp && touch x\nUSER", "DL3003"),
    ],
    ids=[
        "moving tag",
        "latest",
        "no tag",
        "tag from ARG",
        "COPY --from unpinned image",
        "no USER",
        "USER root",
        "gpu target as 0:0",
        "secret ENV",
        "secret ARG",
        "legacy secret ENV",
        "hadolint cd",
    ],
)
def test_a_dockerfile_breaking_a_rule_is_rejected(
    tmp_path: Path, old: str, new: str, rule: str
) -> None:
    assert old in DOCKERFILE, old
    findings = failing(_findings(tmp_path, DOCKERFILE.replace(old, new, 1)))
    assert rule in {f.rule for f in findings}, findings
    finding = next(f for f in findings if f.rule == rule)
    assert finding.line and finding.message


def test_a_digest_pinned_base_image_passes(tmp_path: Path) -> None:
    text = DOCKERFILE.replace(RUNTIME_FROM, f"FROM python@sha256:{'0' * 64} AS runtime")
    assert failing(_findings(tmp_path, text)) == []


def test_a_target_inherits_its_parent_stage_user(tmp_path: Path) -> None:
    text = DOCKERFILE.replace("compute,utility\nUSER 10001:10001", "compute,utility")
    assert failing(_findings(tmp_path, text, targets=("gpu",))) == []


# -- the build ---------------------------------------------------------------------------------


def test_build_runs_buildx_with_the_cloud_flags_and_reports_the_result(
    project: Path, docker_stub: Path
) -> None:
    image = app_image(project)
    digest = image.build_context.digest()
    with dg.instance_for_test() as instance:
        result = build_images([image_asset(image)], instance)
        assert result.success
        argv = json.loads(docker_stub.read_text())
        assert argv[:4] == ["buildx", "build", "--builder", "cloud-acme-sophia"]
        assert argv[argv.index("--tag") + 1] == f"acme/sophia-app:{digest[:12]}"
        assert argv[argv.index("--platform") + 1] == "linux/amd64,linux/arm64"
        assert argv[-1] == str(project)
        [materialization] = result.asset_materializations_for_node("images__app")
        metadata = {k: v.value for k, v in materialization.metadata.items()}
        assert metadata["context_digest"] == digest
        tag = f"acme/sophia-app:{digest[:12]}"
        assert metadata["image_digest"] == _pushed_digest(tag)
        assert metadata["image"] == f"{tag}@{_pushed_digest(tag)}"
        assert (metadata["steps"], metadata["cached_steps"]) == (60, 40)
        assert metadata["build_ref"].startswith("cloud-acme-sophia/")
        logs = [e.user_message for e in instance.all_logs(result.run_id)]
        assert any("STUB-LOG-MARKER" in message for message in logs)  # streamed into the run


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("fail", "docker buildx build exited with 1"),
        ("no-metadata", "the build wrote no metadata file"),
    ],
)
def test_a_failed_build_fails_the_asset_with_the_log_tail(
    project: Path, docker_stub: Path, monkeypatch: pytest.MonkeyPatch, mode: str, reason: str
) -> None:
    monkeypatch.setenv("STUB_MODE", mode)
    with dg.instance_for_test() as instance:
        result = build_images([image_asset(app_image(project))], instance, raise_on_error=False)
        assert not result.success
        message = step_failure(result)
        assert reason in message
        assert "STUB-LOG-MARKER" in message  # the tail of the log comes with it
        assert "RUN step 2\n" not in message  # only the tail
        assert instance.get_latest_materialization_event(dg.AssetKey(["images", "app"])) is None


def test_no_builder_fails_with_the_commands_that_set_one_up(
    project: Path, docker_stub: Path
) -> None:
    with dg.instance_for_test() as instance:
        result = build_images(
            [image_asset(app_image(project))],
            instance,
            builder=ImageBuilderResource(registry="acme"),
            raise_on_error=False,
        )
    message = step_failure(result)
    assert "SOPHIA_BUILDX_BUILDER not set" in message
    assert "docker buildx create --driver cloud ORG/NAME" in message
    assert not docker_stub.exists()  # docker never ran


def test_image_matches_code_until_the_code_changes(project: Path, docker_stub: Path) -> None:
    image = app_image(project)
    check = matches_code_check(image)
    selection = dg.AssetSelection.checks(check)
    with dg.instance_for_test() as instance:
        before = build_images([image_asset(image), check], instance, selection=selection)
        [never_built] = before.get_asset_check_evaluations()
        assert not never_built.passed and "never built" in never_built.description

        build_images([image_asset(image), check], instance)
        after_build = build_images([image_asset(image), check], instance, selection=selection)
        assert after_build.get_asset_check_evaluations()[0].passed

        (project / "pkg/a.py").write_text("A = 2\n")
        stale = build_images([image_asset(image), check], instance, selection=selection)
        [evaluation] = stale.get_asset_check_evaluations()
        assert not evaluation.passed
        assert evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert "rebuild it" in evaluation.description


def test_dockerfile_check_reports_each_finding(project: Path) -> None:
    (project / "Dockerfile").write_text("FROM python:latest\nENV API_TOKEN=x\n")
    image = app_image(project)
    check = dockerfile_check(image)
    result = dg.materialize(
        [image_asset(image), check],
        selection=dg.AssetSelection.checks(check),
        resources={"image_builder": BUILDER},
    )
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed
    report = evaluation.metadata["report"].value
    for rule in ("pinned-base-image", "non-root-user", "no-secret-in-env"):
        assert rule in report


def test_helm_values_pin_the_last_built_image(
    project: Path, docker_stub: Path, tmp_path: Path
) -> None:
    image = app_image(project)
    values = helm_values_asset(image.asset_key)
    with dg.instance_for_test() as instance:
        unbuilt = build_images([values], instance, raise_on_error=False)
        assert "images/app has never been built; materialize it before" in step_failure(unbuilt)

        build_images([image_asset(image)], instance)
        rendered = build_images([values], instance)
        path = Path(
            rendered.asset_materializations_for_node("deploy__helm_values")[0]
            .metadata["path"]
            .value
        )
    digest = image.build_context.digest()
    document = yaml.safe_load(path.read_text())
    [deployment] = document["dagster-user-deployments"]["deployments"]
    assert deployment["image"]["repository"] == "acme/sophia-app"
    pushed = _pushed_digest(f"acme/sophia-app:{digest[:12]}")
    assert deployment["image"]["tag"] == f"{digest[:12]}@{pushed}"
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "sophia_assets.definitions"]


def test_the_ui_shows_the_image_stale_exactly_when_its_inputs_change(
    project: Path, docker_stub: Path
) -> None:
    image = app_image(project)
    values = helm_values_asset(image.asset_key)
    with dg.instance_for_test() as instance:
        build_images([image_asset(image), values], instance)
        graph = [image_asset(image), values]
        assert {s for s, _ in stale_status(instance, graph).values()} == {"FRESH"}

        (project / "tests/test_a.py").write_text("ignored")  # not an input: still fresh
        assert stale_status(instance, [image_asset(image), values])[image.asset_key][0] == "FRESH"

        (project / "pkg/a.py").write_text("A = 2\n")  # an input: the code version moves
        status = stale_status(instance, [image_asset(image), values])
        assert status[image.asset_key] == ("STALE", ["CODE"])

        build_images([image_asset(image)], instance)  # rebuilt: a new image digest
        status = stale_status(instance, [image_asset(image), values])
        assert status[image.asset_key][0] == "FRESH"
        assert status[dg.AssetKey(["deploy", "helm_values"])] == ("STALE", ["DATA"])


def test_rebuild_on_change_requests_one_build_when_the_code_changes(
    project: Path, docker_stub: Path
) -> None:
    from dataclasses import replace

    image = replace(app_image(project), rebuild_on_change=True)
    with dg.instance_for_test() as instance:
        build_images([image_asset(image)], instance)
        defs = dg.Definitions(assets=[image_asset(image)], resources={"image_builder": BUILDER})
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.total_requested == 0  # built from this context already

        (project / "pkg/a.py").write_text("A = 3\n")
        changed = dg.Definitions(assets=[image_asset(image)], resources={"image_builder": BUILDER})
        second = dg.evaluate_automation_conditions(
            defs=changed, instance=instance, cursor=first.cursor
        )
        assert second.total_requested == 1
        assert second.get_requested_partitions(image.asset_key) == {None}
        third = dg.evaluate_automation_conditions(
            defs=changed, instance=instance, cursor=second.cursor
        )
        assert third.total_requested == 0  # requested once, not on every tick


def test_the_image_context_holds_everything_the_code_location_loads(tmp_path: Path) -> None:
    """The code location, loaded from a copy of exactly the image's files, works: the image
    is not missing a file the definitions read (deploy/images.yaml, the Dockerfile, infra/)."""
    import os
    import shutil
    import subprocess
    import sys

    [image] = [i for i in load_images() if i.name == "code-location"]
    root = tmp_path / "app"
    for relative in image.build_context.files():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, root / relative)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sophia_assets.definitions as d, sophia_assets.home as h;"
            "print(h.PROJECT_ROOT); d.defs.resolve_asset_graph()",
        ],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str(root)  # the copy was loaded, not the checkout
