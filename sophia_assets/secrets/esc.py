"""Reading a Pulumi ESC environment with the `pulumi-esc-sdk` client: open a session, read
its resolved values. `environmentVariables` in the environment become the run's environment,
as `esc run` does, so every resource that reads its secret from the environment gets it."""

from __future__ import annotations

import os
import threading
from typing import Any

ENVIRONMENT_VARIABLES = "environmentVariables"
_loaded: dict[str, dict] = {}  # reference -> values, once per process
_lock = threading.Lock()


class EscError(RuntimeError):
    pass


def open_environment(reference: str, token: str | None, api_url: str | None = None) -> dict:
    """The resolved values of `org/project/env` (one open session)."""
    import pulumi_esc_sdk as esc

    parts = reference.split("/")
    if len(parts) != 3 or not all(parts):
        raise EscError(f"ESC environment {reference!r}: write it as <org>/<project>/<env>")
    if not token:
        raise EscError(
            f"ESC environment {reference}: no access token; set PULUMI_ACCESS_TOKEN "
            "(a Pulumi Cloud token with access to the environment)"
        )
    client = esc.EscClient(esc.Configuration(host=api_url, access_token=token))
    try:
        _, values, _ = client.open_and_read_environment(*parts)
    except esc.ApiException as err:  # its text holds the response, never the token
        raise EscError(f"ESC environment {reference}: {err.status} {err.reason}") from None
    return values or {}


def exported_variables(values: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (values.get(ENVIRONMENT_VARIABLES) or {}).items()}


def load_esc_environment(
    reference: str | None = None, api_url: str | None = None, token_env: str = "PULUMI_ACCESS_TOKEN"
) -> dict:
    """Opens the ESC environment (default SOPHIA_ESC_ENVIRONMENT) once per process and puts its
    `environmentVariables` into this process's environment; {} when none is configured."""
    reference = reference if reference is not None else os.environ.get("SOPHIA_ESC_ENVIRONMENT")
    if not reference:
        return {}
    with _lock:
        if reference not in _loaded:
            values = open_environment(
                reference, os.environ.get(token_env), api_url or os.environ.get("SOPHIA_ESC_URL")
            )
            os.environ.update(exported_variables(values))
            _loaded[reference] = values
        return _loaded[reference]
