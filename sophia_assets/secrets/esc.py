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


TIMEOUT_ENV = "SOPHIA_ESC_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 10.0


def request_timeout() -> tuple[float, float]:
    """(connect, read) seconds for every ESC call: a stalled ESC must never hang a caller."""
    total = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S)
    return (min(total, 5.0), total)


def esc_client(token: str, api_url: str | None):
    """The SDK's client, with no retries of its own (callers back off themselves)."""
    import pulumi_esc_sdk as esc

    configuration = esc.Configuration(host=api_url, access_token=token)
    configuration.retries = 0
    return esc.EscClient(configuration)


def open_environment(reference: str, token: str | None, api_url: str | None = None) -> dict:
    """The resolved values of `org/project/env` (one open session)."""
    import pulumi_esc_sdk as esc
    import urllib3
    from pulumi_esc_sdk.esc_client import convertEnvPropertiesToValues

    parts = reference.split("/")
    if len(parts) != 3 or not all(parts):
        raise EscError(f"ESC environment {reference!r}: write it as <org>/<project>/<env>")
    if not token:
        raise EscError(
            f"ESC environment {reference}: no access token; set PULUMI_ACCESS_TOKEN "
            "(a Pulumi Cloud token with access to the environment)"
        )
    api = esc_client(token, api_url).esc_api
    timeout = request_timeout()
    try:
        session = api.open_environment(*parts, _request_timeout=timeout)
        read = api.read_open_environment_with_http_info(
            *parts, session.id, _request_timeout=timeout
        )
    except esc.ApiException as err:  # its text holds the response, never the token
        raise EscError(f"ESC environment {reference}: {err.status} {err.reason}") from None
    except (OSError, urllib3.exceptions.HTTPError) as err:  # timeouts, dropped connections
        raise EscError(f"ESC environment {reference}: unreachable ({type(err).__name__})") from None
    return convertEnvPropertiesToValues(read.data.properties) or {}


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
