"""The Prometheus Pushgateway that Dagster runs and the GPU janitor push their figures to,
when `SOPHIA_PUSHGATEWAY_URL` is set (read at push time, never put in config or logs).
Unset, nothing is pushed. A push that fails is logged and never fails the work that made
the figures."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import dagster as dg

from sophia_assets.metrics.push import Figure, push_figures

PUSHGATEWAY_ENV = "SOPHIA_PUSHGATEWAY_URL"
log = logging.getLogger("sophia.metrics")


class PushgatewayResource(dg.ConfigurableResource):
    url_env: str = PUSHGATEWAY_ENV
    timeout_s: float = 10.0

    @property
    def configured(self) -> bool:
        return bool(os.environ.get(self.url_env))

    def push(self, job: str, grouping: Mapping[str, str], figures: Mapping[str, Figure]) -> bool:
        """Whether the figures were pushed; False when no gateway is set or it failed."""
        gateway = os.environ.get(self.url_env)
        if not gateway:
            return False
        try:
            push_figures(gateway, job, grouping, figures, self.timeout_s)
        except OSError as err:  # URLError, refused, timed out: the gateway, not the work
            log.warning(
                "could not push %s figures to the Pushgateway (%s): %s; check %s",
                job,
                type(err).__name__,
                getattr(err, "reason", err),
                self.url_env,
            )
            return False
        return True
