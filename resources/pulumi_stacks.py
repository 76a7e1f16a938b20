"""How infra/<stack> assets run Pulumi: `PulumiStacksResource` drives the Automation API
(the `pulumi` CLI, `PULUMI_BACKEND_URL`, an optional ESC environment); tests put a recording
stand-in behind the same interface."""

from abc import ABC, abstractmethod

import dagster as dg
from pydantic import Field

from sophia_assets.stacks.automation import PulumiAutomation, StackRunner


class StackRunnerResource(dg.ConfigurableResource, ABC):
    @abstractmethod
    def runner(self) -> StackRunner: ...


class PulumiStacksResource(StackRunnerResource):
    backend_url: str | None = Field(default=None, description="Default: PULUMI_BACKEND_URL")
    esc_environment: str | None = Field(
        default=None, description="project/env imported into every stack (SOPHIA_ESC_ENVIRONMENT)"
    )

    def runner(self) -> StackRunner:
        return PulumiAutomation(self.backend_url, self.esc_environment)
