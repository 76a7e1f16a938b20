"""The Prometheus Pushgateway that Dagster runs and the GPU janitor push their figures to,
when `SOPHIA_PUSHGATEWAY_URL` is set (read at push time, never put in config or logs; a
`user:password@` in it is sent as HTTP basic auth). Unset, nothing is pushed. A push that
fails is logged by the kind of error only and never fails the work that made the figures."""

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
        except Exception as err:  # the gateway's trouble, never the work's
            # Only the error's kind: its text may hold the URL, and the URL a password.
            log.warning(
                "could not push %s figures to the Pushgateway (%s); check %s",
                job,
                _kind(err),
                self.url_env,
            )
            return False
        return True


def _kind(err: Exception) -> str:
    """The error's class, and for a refused connection or an HTTP status its number."""
    reason = getattr(err, "reason", None)
    code = getattr(err, "code", None) or getattr(reason, "errno", None)
    return f"{type(err).__name__} {code}" if code else type(err).__name__
