"""The Lambda Cloud public API (v1, contract 1.8.3) over httpx.

Success bodies are `{"data": ...}`; failures are `{"error": {code, message, suggestion}}` and
become typed errors by `code`. Calls are paced to the documented limits: about one request per
second, and at most one launch every 12 seconds (failed launches count); 429 and 5xx answers
are retried with backoff.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from sophia_assets.backoff import Backoff
from sophia_assets.gpu.clock import Clock, SystemClock

API_URL = "https://cloud.lambda.ai"
REQUEST_INTERVAL_S = 1.0
LAUNCH_INTERVAL_S = 12.0
RETRIES = 5


class LambdaCloudError(RuntimeError):
    """An error envelope from the API; `code` is Lambda's, e.g. global/invalid-api-key."""

    def __init__(self, status: int, code: str, message: str, suggestion: str | None = None):
        self.status, self.code, self.suggestion = status, code, suggestion
        text = f"Lambda Cloud {status} {code}: {message}"
        super().__init__(text + (f" ({suggestion})" if suggestion else ""))


class LaunchOutcomeUnknown(LambdaCloudError):
    """A launch request timed out, dropped or met a 5xx: an instance may exist or not. The
    contract has no idempotency key, so the caller lists instances by tag instead of retrying."""


class InsufficientCapacity(LambdaCloudError):
    pass


class QuotaExceeded(LambdaCloudError):
    pass


class InvalidRequest(LambdaCloudError):
    pass


class Unauthorized(LambdaCloudError):
    pass


class NotFound(LambdaCloudError):
    pass


class RateLimited(LambdaCloudError):
    pass


_BY_CODE = {
    "instance-operations/launch/insufficient-capacity": InsufficientCapacity,
    "global/quota-exceeded": QuotaExceeded,
    "global/invalid-parameters": InvalidRequest,
    "global/invalid-api-key": Unauthorized,
    "global/object-does-not-exist": NotFound,
}


@dataclass(frozen=True)
class InstanceType:
    name: str
    description: str
    price_cents_per_hour: int
    gpus: int
    regions_with_capacity: tuple[str, ...]


@dataclass(frozen=True)
class Instance:
    id: str
    status: str
    name: str
    ip: str | None
    region: str
    instance_type: str
    price_cents_per_hour: int
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Instance:
        kind = data.get("instance_type") or {}
        return cls(
            id=data["id"],
            status=data["status"],
            name=data.get("name") or "",
            ip=data.get("ip"),
            region=(data.get("region") or {}).get("name", ""),
            instance_type=kind.get("name", ""),
            price_cents_per_hour=int(kind.get("price_cents_per_hour") or 0),
            tags={t["key"]: t["value"] for t in data.get("tags") or []},
        )


@dataclass(frozen=True)
class SshKey:
    id: str
    name: str
    public_key: str


class LambdaCloud:
    """One client per run or sensor tick; `close()` (or `with`) releases its connections."""

    def __init__(
        self,
        api_key: str,
        base_url: str = API_URL,
        clock: Clock | None = None,
        request_interval_s: float = REQUEST_INTERVAL_S,
        launch_interval_s: float = LAUNCH_INTERVAL_S,
        timeout_s: float = 30.0,
    ):
        if not api_key:
            raise Unauthorized(0, "global/invalid-api-key", "no API key given", _KEY_HINT)
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/api/v1",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
        )
        self.clock = clock or SystemClock()
        self.request_interval_s = request_interval_s
        self.launch_interval_s = launch_interval_s
        self._last_request: float | None = None
        self._last_launch: float | None = None

    def __enter__(self) -> LambdaCloud:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- calls --------------------------------------------------------------------------------

    def instance_types(self) -> list[InstanceType]:
        data = self._call("GET", "/instance-types")
        return [
            InstanceType(
                name=item["instance_type"]["name"],
                description=item["instance_type"]["description"],
                price_cents_per_hour=item["instance_type"]["price_cents_per_hour"],
                gpus=item["instance_type"]["specs"]["gpus"],
                regions_with_capacity=tuple(
                    r["name"] for r in item["regions_with_capacity_available"]
                ),
            )
            for item in data.values()
        ]

    def launch(
        self,
        region: str,
        instance_type: str,
        ssh_key: str,
        name: str,
        tags: dict[str, str],
        file_systems: list[str] | None = None,
        user_data: str | None = None,
        firewall_rulesets: list[str] | None = None,
    ) -> str:
        """Launches one instance and returns its id; paced to one launch per 12 s. Never
        retried once sent: an answerless attempt raises `LaunchOutcomeUnknown`."""
        body: dict[str, Any] = {
            "region_name": region,
            "instance_type_name": instance_type,
            "ssh_key_names": [ssh_key],
            "name": name[:64],
            "tags": [{"key": k, "value": v[:128]} for k, v in tags.items()],
        }
        if file_systems:
            body["file_system_names"] = file_systems
        if user_data:
            body["user_data"] = user_data
        if firewall_rulesets:
            body["firewall_rulesets"] = [{"id": ruleset} for ruleset in firewall_rulesets]
        if self._last_launch is not None:
            self.clock.sleep(self._last_launch + self.launch_interval_s - self.clock.monotonic())
        try:
            path = "/instance-operations/launch"
            return self._call("POST", path, body, idempotent=False)["instance_ids"][0]
        finally:
            self._last_launch = self.clock.monotonic()

    def instance(self, instance_id: str) -> Instance:
        return Instance.parse(self._call("GET", f"/instances/{instance_id}"))

    def instances(self) -> list[Instance]:
        return [Instance.parse(item) for item in self._call("GET", "/instances")]

    def terminate(self, instance_ids: list[str]) -> list[Instance]:
        data = self._call("POST", "/instance-operations/terminate", {"instance_ids": instance_ids})
        return [Instance.parse(item) for item in data["terminated_instances"]]

    def ssh_keys(self) -> list[SshKey]:
        return [SshKey(k["id"], k["name"], k["public_key"]) for k in self._call("GET", "/ssh-keys")]

    def add_ssh_key(self, name: str, public_key: str) -> SshKey:
        data = self._call("POST", "/ssh-keys", {"name": name, "public_key": public_key})
        return SshKey(data["id"], data["name"], data["public_key"])

    # -- transport ----------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, body: dict | None = None, idempotent: bool = True
    ) -> Any:
        """One call, retried with backoff on 429, and (when `idempotent`) on 5xx and transport
        errors. A request that may have taken effect is not repeated when not idempotent."""
        backoff = Backoff(self.request_interval_s, 30.0)
        for attempt in range(RETRIES + 1):
            self._pace()
            try:
                response = self._http.request(method, path, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as err:  # never sent
                if attempt == RETRIES:
                    raise LambdaCloudError(0, "transport", f"{method} {path}: {err}") from err
            except httpx.TransportError as err:
                if not idempotent:
                    raise LaunchOutcomeUnknown(0, "transport", f"{method} {path}: {err!r}") from err
                if attempt == RETRIES:
                    raise LambdaCloudError(0, "transport", f"{method} {path}: {err}") from err
            else:
                if response.status_code < 400:
                    return response.json()["data"]
                error = _error(response)
                if response.status_code >= 500 and not idempotent:
                    raise LaunchOutcomeUnknown(
                        error.status, error.code, f"{method} {path}: a server error"
                    ) from error
                if not isinstance(error, RateLimited) and response.status_code < 500:
                    raise error
                if attempt == RETRIES:
                    raise error
            self.clock.sleep(backoff.next_delay())
        raise AssertionError("unreachable")

    def _pace(self) -> None:
        if self._last_request is not None:
            self.clock.sleep(self._last_request + self.request_interval_s - self.clock.monotonic())
        self._last_request = self.clock.monotonic()


_KEY_HINT = "set SOPHIA_LAMBDA_API_KEY to a key from the Lambda Cloud dashboard (API keys)"


def _error(response: httpx.Response) -> LambdaCloudError:
    try:
        envelope = response.json().get("error") or {}
    except ValueError:
        envelope = {}
    code = envelope.get("code") or f"http/{response.status_code}"
    message = envelope.get("message") or response.reason_phrase
    suggestion = envelope.get("suggestion")
    kind = RateLimited if response.status_code == 429 else _BY_CODE.get(code, LambdaCloudError)
    if kind is Unauthorized:
        suggestion = _KEY_HINT
    return kind(response.status_code, code, message, suggestion)
