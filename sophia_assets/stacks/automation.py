"""Running a stack: the interface the infra assets use, and its real implementation on the
Pulumi Automation API (which drives the `pulumi` CLI: it must be on PATH).

The backend comes from `PULUMI_BACKEND_URL` (e.g. `file://...` with
`PULUMI_CONFIG_PASSPHRASE`, or Pulumi Cloud with `PULUMI_ACCESS_TOKEN`); an ESC environment
named in `SOPHIA_ESC_ENVIRONMENT` is imported into every stack's config, where the programs
read their secrets."""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sophia_assets.stacks.catalog import StackSpec

PROJECT = "sophia"
INSTALL = (
    "the pulumi CLI is not on PATH; the Automation API drives it. Install it with Pulumi's "
    "installer or a package manager (`brew install pulumi`), then set PULUMI_BACKEND_URL "
    "(and PULUMI_CONFIG_PASSPHRASE for a file backend, or PULUMI_ACCESS_TOKEN for Pulumi Cloud)"
)


class PulumiMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class StackOutput:
    value: Any
    secret: bool


@dataclass
class UpResult:
    outputs: dict[str, StackOutput]
    changes: dict[str, int]  # operation -> resources: create, update, same, delete, replace
    resources: int

    def masked_outputs(self) -> dict[str, Any]:
        return {k: "[secret]" if o.secret else o.value for k, o in self.outputs.items()}


@dataclass
class PreviewResult:
    changes: dict[str, int] = field(default_factory=dict)

    @property
    def drifted(self) -> dict[str, int]:
        return {op: n for op, n in self.changes.items() if op != "same" and n}


class StackRunner(ABC):
    @abstractmethod
    def up(
        self, stack: StackSpec, config: dict[str, str], on_output: Callable[[str], None]
    ) -> UpResult: ...

    @abstractmethod
    def preview(
        self, stack: StackSpec, config: dict[str, str], on_output: Callable[[str], None]
    ) -> PreviewResult: ...


class PulumiAutomation(StackRunner):
    def __init__(self, backend_url: str | None = None, esc_environment: str | None = None):
        self.backend_url = backend_url or os.environ.get("PULUMI_BACKEND_URL")
        self.esc_environment = esc_environment or os.environ.get("SOPHIA_ESC_ENVIRONMENT")

    def _stack(self, stack: StackSpec, config: dict[str, str]):
        if shutil.which("pulumi") is None:
            raise PulumiMissing(INSTALL)
        if not self.backend_url:
            raise PulumiMissing("PULUMI_BACKEND_URL is not set; " + INSTALL.split("; ", 1)[1])
        from pulumi import automation as auto

        settings = auto.ProjectSettings(
            name=PROJECT, runtime="python", backend=auto.ProjectBackend(url=self.backend_url)
        )
        handle = auto.create_or_select_stack(
            stack_name=stack.name,
            project_name=PROJECT,
            program=stack.program(),
            opts=auto.LocalWorkspaceOptions(project_settings=settings),
        )
        if self.esc_environment:
            handle.add_environments(self.esc_environment)
        for key, value in config.items():
            handle.set_config(f"{PROJECT}:{key}", auto.ConfigValue(value=value))
        return handle

    def up(self, stack, config, on_output) -> UpResult:
        handle = self._stack(stack, config)
        result = handle.up(on_output=on_output, color="never")
        changes = dict(result.summary.resource_changes or {})
        return UpResult(
            outputs={k: StackOutput(v.value, v.secret) for k, v in result.outputs.items()},
            changes=changes,
            resources=sum(n for op, n in changes.items() if op != "delete"),
        )

    def preview(self, stack, config, on_output) -> PreviewResult:
        handle = self._stack(stack, config)
        result = handle.preview(on_output=on_output, color="never")
        return PreviewResult({str(k): int(v) for k, v in (result.change_summary or {}).items()})
