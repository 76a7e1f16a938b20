"""infra/<stack> assets and their drift check, with the Automation API behind the StackRunner
interface: a recording stand-in here (the `pulumi` CLI cannot be installed on these machines),
and the real one failing with how to install the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import dagster as dg
import pytest

from resources.pulumi_stacks import PulumiStacksResource, StackRunnerResource
from sophia_assets.assets.images import image_asset
from sophia_assets.assets.stacks import stack_asset
from sophia_assets.checks.stacks import drift_check
from sophia_assets.stacks.automation import (
    PreviewResult,
    StackOutput,
    StackRunner,
    UpResult,
)
from sophia_assets.stacks.catalog import StackSpec
from tests.support.dagster_runs import step_failure
from tests.support.images import BUILDER, app_image, build_images, stale_status


class Recording(StackRunner):
    calls: ClassVar[list[tuple[str, str, dict]]] = []
    preview_changes: ClassVar[dict[str, int]] = {"same": 7}

    def up(self, stack, config, on_output) -> UpResult:
        self.calls.append(("up", stack.name, dict(config)))
        on_output("Updating (dagster):\n +  kubernetes:core/v1:Secret sophia-platform created\n")
        return UpResult(
            outputs={
                "namespace": StackOutput("sophia", False),
                "postgresPassword": StackOutput("pw-from-esc", True),
            },
            changes={"create": 7},
            resources=7,
        )

    def preview(self, stack, config, on_output) -> PreviewResult:
        self.calls.append(("preview", stack.name, dict(config)))
        on_output("Previewing update (dagster):\n")
        return PreviewResult(dict(self.preview_changes))


class RecordingStacks(StackRunnerResource):
    def runner(self) -> StackRunner:
        return Recording()


@pytest.fixture(autouse=True)
def _fresh_recording():
    Recording.calls.clear()
    Recording.preview_changes = {"same": 7}


def _stack(project_image: dg.AssetKey) -> StackSpec:
    return StackSpec("dagster", "infra.dagster_deployment", project_image, "codeLocationImage", "")


def _run(assets, instance, stacks=None, **kwargs):
    return dg.materialize(
        assets,
        instance=instance,
        resources={"pulumi_stacks": stacks or RecordingStacks(), "image_builder": BUILDER},
        **kwargs,
    )


def test_up_deploys_the_built_image_and_reports_masked_outputs(project: Path, docker_stub) -> None:
    image = app_image(project)
    stack = _stack(image.asset_key)
    with dg.instance_for_test() as instance:
        unbuilt = _run([stack_asset(stack)], instance, raise_on_error=False)
        assert "images/app has never been built; materialize it before infra/dagster" in (
            step_failure(unbuilt)
        )
        assert Recording.calls == []

        built = build_images([image_asset(image)], instance)
        reference = built.asset_materializations_for_node("images__app")[0].metadata["image"].value
        result = _run([stack_asset(stack)], instance)
        logs = "\n".join(e.user_message for e in instance.all_logs(result.run_id))
    assert Recording.calls == [("up", "dagster", {"codeLocationImage": reference})]
    [materialization] = result.asset_materializations_for_node("infra__dagster")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["outputs"] == {"namespace": "sophia", "postgresPassword": "[secret]"}
    assert metadata["changes"] == {"create": 7} and metadata["resources"] == 7
    assert "pw-from-esc" not in str(metadata) and "pw-from-esc" not in logs
    assert "kubernetes:core/v1:Secret sophia-platform created" in logs  # Pulumi's output


def test_drift_check_fails_when_the_preview_has_changes(project: Path, docker_stub) -> None:
    image = app_image(project)
    stack = _stack(image.asset_key)
    check = drift_check(stack)
    with dg.instance_for_test() as instance:
        build_images([image_asset(image)], instance)
        selection = dg.AssetSelection.checks(check)
        clean = _run([stack_asset(stack), check], instance, selection=selection)
        assert clean.get_asset_check_evaluations()[0].passed

        Recording.preview_changes = {"same": 6, "update": 1}
        drifted = _run([stack_asset(stack), check], instance, selection=selection)
    [evaluation] = drifted.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.description == "the live stack differs from the program: 1 to update"
    assert evaluation.metadata["changes"].value == {"same": 6, "update": 1}
    assert [c[0] for c in Recording.calls] == ["preview", "preview"]


def test_a_rebuilt_image_marks_the_stack_that_deploys_it_stale(project: Path, docker_stub) -> None:
    image = app_image(project)
    stack = _stack(image.asset_key)
    with dg.instance_for_test() as instance:
        build_images([image_asset(image)], instance)
        _run([stack_asset(stack)], instance)
        stacks = {"pulumi_stacks": RecordingStacks()}
        graph = [image_asset(image), stack_asset(stack)]
        assert stale_status(instance, graph, stacks)[stack.asset_key][0] == "FRESH"
        (project / "pkg/a.py").write_text("A = 9\n")
        build_images([image_asset(image)], instance)  # a new image digest
        graph = [image_asset(image), stack_asset(stack)]
        assert stale_status(instance, graph, stacks)[stack.asset_key] == ("STALE", ["DATA"])


def test_without_the_pulumi_cli_the_asset_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no pulumi here, whatever the machine has
    stack = StackSpec("n8n", "infra.n8n", dg.AssetKey(["images", "n8n"]), None, "")
    with dg.instance_for_test() as instance:
        result = _run(
            [stack_asset(stack)],
            instance,
            stacks=PulumiStacksResource(backend_url="file:///tmp/state"),
            raise_on_error=False,
        )
    message = step_failure(result)
    assert "infra/n8n: the pulumi CLI is not on PATH" in message
    assert "brew install pulumi" in message and "PULUMI_BACKEND_URL" in message
