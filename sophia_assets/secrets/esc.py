"""Reading a Pulumi ESC environment with the `pulumi-esc-sdk` client: open a session, read
its resolved values. `environmentVariables` in the environment become the run's environment,
as `esc run` does, so every resource that reads its secret from the environment gets it."""

from __future__ import annotations

from typing import Any

ENVIRONMENT_VARIABLES = "environmentVariables"


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
