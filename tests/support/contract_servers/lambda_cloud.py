"""A loopback Lambda Cloud API that follows `tests/contracts/lambda-cloud-api-1.8.3.json`
(requests and responses validated by `ContractServer`), with a stateful fleet: an instance
boots, becomes active after `boot_s` on the server's clock (never, when None), and terminating
takes `terminate_s`. Capacity is per instance type and region; a launch without capacity gets
the contract's insufficient-capacity error. Every launch is timed on the server's clock, and one
that comes sooner than 12 s after the previous is recorded as a violation of the rate limit.
The instance address it hands out is loopback, where the tests run sshd."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sophia_assets.gpu.clock import Clock, SystemClock
from tests.support.contract_servers.contract_server import ContractServer, DropConnection

API_KEY = "lambda-test-key-not-a-secret"
LAUNCH_INTERVAL_S = 12.0
REQUEST_INTERVAL_S = 1.0
TYPES = {
    "gpu_1x_a10": ("1x A10 (24 GB PCIe)", "A10 (24 GB PCIe)", 75),
    "gpu_1x_a100": ("1x A100 (40 GB SXM4)", "A100 (40 GB SXM4)", 129),
    "gpu_1x_h100_pcie": ("1x H100 (80 GB PCIe)", "H100 (80 GB PCIe)", 249),
}
REGIONS = {"us-east-1": "Virginia, USA", "us-west-1": "California, USA"}
LIVE = ("booting", "active", "unhealthy", "terminating")


class VirtualClock:
    """A clock that moves only when someone sleeps on it: waits cost no real time."""

    def __init__(self, start: float = 1_000.0):
        self._now = start
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._now += max(seconds, 0.0)


@dataclass
class FakeInstance:
    id: str
    name: str
    instance_type: str
    region: str
    ssh_key: str
    tags: dict[str, str]
    launched_at: float
    user_data: str = ""
    firewall_rulesets: list[str] = field(default_factory=list)
    status: str = "booting"
    terminate_requested_at: float | None = None
    history: list[str] = field(default_factory=lambda: ["booting"])


class LambdaCloudContractServer(ContractServer):
    def __init__(
        self,
        capacity: dict[tuple[str, str], int] | None = None,
        clock: Clock | None = None,
        boot_s: float | None = 2.0,
        terminate_s: float = 1.0,
        ip: str = "127.0.0.1",
        quota: int | None = None,
        phantom: set[tuple[str, str]] | None = None,
        lose_launch_answers: int = 0,
        lose_as: str = "drop",
    ):
        super().__init__("lambda-cloud-api-1.8.3.json")
        self.clock = clock or SystemClock()
        # (type, region) -> instances that can still launch there; default: one type has room
        self.capacity = dict(
            capacity if capacity is not None else {("gpu_1x_a10", "us-east-1"): 10}
        )
        self.boot_s, self.terminate_s, self.ip, self.quota = boot_s, terminate_s, ip, quota
        # listed as having capacity, but gone by the time a launch arrives (a race)
        self.phantom = set(phantom or ())
        # the next N launches create their instance, then the answer is lost: the connection
        # drops ("drop") or a gateway answers 502 ("502")
        self.lose_launch_answers, self.lose_as = lose_launch_answers, lose_as
        self.listed_after_s = 0.0  # a new instance shows in GET /instances only after this
        self.on_launch: Callable[[FakeInstance], None] = lambda instance: None
        self.fleet: dict[str, FakeInstance] = {}
        self.ssh_keys: dict[str, dict[str, str]] = {}
        self.launches: list[tuple[float, str, str, str]] = []  # (time, type, region, outcome)
        self.request_times: list[float] = []
        self._lock = threading.RLock()
        self._ids = itertools.count(1)

    # -- what tests look at -------------------------------------------------------------------

    def live(self) -> list[FakeInstance]:
        """Instances not yet terminated (terminating ones still cost money)."""
        with self._lock:
            self._advance()
            return [i for i in self.fleet.values() if i.status in LIVE]

    def launch_gaps(self) -> list[float]:
        times = [t for t, *_ in self.launches]
        return [b - a for a, b in itertools.pairwise(times)]

    def add_ssh_key(self, name: str, public_key: str) -> None:
        self.ssh_keys[name] = {"id": uuid.uuid4().hex, "name": name, "public_key": public_key}

    # -- the API ------------------------------------------------------------------------------

    def answer(self, path, method, data, query, headers, size) -> tuple[int, dict]:
        with self._lock:
            self.request_times.append(self.clock.monotonic())
            if headers.get("Authorization", headers.get("authorization")) != f"Bearer {API_KEY}":
                return 401, _error("global/invalid-api-key", "API key was invalid.", "Check it.")
            self._advance()
            route = path.removeprefix("/api/v1")
            if route == "/instance-types" and method == "get":
                return 200, {"data": self._types()}
            if route == "/instance-operations/launch" and method == "post":
                return self._launch(data)
            if route == "/instances" and method == "get":
                now = self.clock.monotonic()
                listed = [
                    i for i in self.fleet.values() if now - i.launched_at >= self.listed_after_s
                ]
                return 200, {"data": [self._render(i) for i in listed]}
            if route.startswith("/instances/") and method == "get":
                instance = self.fleet.get(route.rsplit("/", 1)[1])
                if instance is None:
                    return 404, _error("global/object-does-not-exist", "No such instance.")
                return 200, {"data": self._render(instance)}
            if route == "/instance-operations/terminate" and method == "post":
                return self._terminate(data["instance_ids"])
            if route == "/ssh-keys" and method == "get":
                return 200, {"data": list(self.ssh_keys.values())}
            if route == "/ssh-keys" and method == "post":
                self.add_ssh_key(data["name"], data.get("public_key") or "ssh-ed25519 AAAA")
                return 200, {"data": self.ssh_keys[data["name"]]}
            return 400, _error("global/invalid-parameters", f"no route {method} {route}")

    def _launch(self, data: dict[str, Any]) -> tuple[int, dict]:
        now = self.clock.monotonic()
        kind, region = data["instance_type_name"], data["region_name"]
        if self.launches and now - self.launches[-1][0] < LAUNCH_INTERVAL_S - 1e-6:
            gap = now - self.launches[-1][0]
            self.violations.append(f"rate limit: a launch {gap:.2f} s after the previous one")
        if data["ssh_key_names"][0] not in self.ssh_keys:
            self.launches.append((now, kind, region, "no-key"))
            return 400, _error(
                "global/invalid-parameters", f"SSH key {data['ssh_key_names'][0]} not found."
            )
        if self.quota is not None and len(self.live()) >= self.quota:
            self.launches.append((now, kind, region, "quota"))
            return 400, _error("global/quota-exceeded", "Quota exceeded.", "Contact Support.")
        if self.capacity.get((kind, region), 0) <= 0:
            self.launches.append((now, kind, region, "no-capacity"))
            return 400, _error(
                "instance-operations/launch/insufficient-capacity",
                "Not enough capacity to fulfill launch request.",
            )
        self.capacity[(kind, region)] -= 1
        instance = FakeInstance(
            id=f"{next(self._ids):032x}",
            name=data.get("name") or "",
            instance_type=kind,
            region=region,
            ssh_key=data["ssh_key_names"][0],
            tags={t["key"]: t["value"] for t in data.get("tags") or []},
            launched_at=now,
            user_data=data.get("user_data") or "",
            firewall_rulesets=[r["id"] for r in data.get("firewall_rulesets") or []],
        )
        self.fleet[instance.id] = instance
        self.launches.append((now, kind, region, instance.id))
        self.on_launch(instance)  # what cloud-init would do with user_data
        if self.lose_launch_answers > 0:
            self.lose_launch_answers -= 1
            if self.lose_as == "drop":
                raise DropConnection
            return 502, _error("http/502", "Bad Gateway")
        return 200, {"data": {"instance_ids": [instance.id]}}

    def _terminate(self, ids: list[str]) -> tuple[int, dict]:
        missing = [i for i in ids if i not in self.fleet]
        if missing:
            return 404, _error("global/object-does-not-exist", f"No instance {missing[0]}.")
        now = self.clock.monotonic()
        for instance_id in ids:
            instance = self.fleet[instance_id]
            if instance.status in ("booting", "active", "unhealthy"):
                self._set(instance, "terminating")
                instance.terminate_requested_at = now
                key = (instance.instance_type, instance.region)
                self.capacity[key] = self.capacity.get(key, 0) + 1
        self._advance()
        return 200, {"data": {"terminated_instances": [self._render(self.fleet[i]) for i in ids]}}

    def _advance(self) -> None:
        now = self.clock.monotonic()
        for instance in self.fleet.values():
            if (
                instance.status == "booting"
                and self.boot_s is not None
                and now - instance.launched_at >= self.boot_s
            ):
                self._set(instance, "active")
            if (
                instance.status == "terminating"
                and now - (instance.terminate_requested_at or now) >= self.terminate_s
            ):
                self._set(instance, "terminated")

    @staticmethod
    def _set(instance: FakeInstance, status: str) -> None:
        instance.status = status
        instance.history.append(status)

    def _types(self) -> dict[str, Any]:
        return {
            name: {
                "instance_type": _type(name),
                "regions_with_capacity_available": [
                    {"name": region, "description": REGIONS[region]}
                    for (kind, region) in sorted(
                        {k for k, room in self.capacity.items() if room > 0} | self.phantom
                    )
                    if kind == name
                ],
            }
            for name in TYPES
        }

    def _render(self, instance: FakeInstance) -> dict[str, Any]:
        can_terminate = instance.status in ("booting", "active", "unhealthy")
        rendered = {
            "id": instance.id,
            "name": instance.name,
            "status": instance.status,
            "ssh_key_names": [instance.ssh_key],
            "file_system_names": [],
            "region": {"name": instance.region, "description": REGIONS[instance.region]},
            "instance_type": _type(instance.instance_type),
            "actions": {
                action: {"available": can_terminate if action == "terminate" else False}
                for action in ("migrate", "rebuild", "restart", "cold_reboot", "terminate")
            },
            "tags": [{"key": k, "value": v} for k, v in instance.tags.items()],
        }
        if instance.status == "active":
            rendered["ip"] = self.ip
        return rendered


def _type(name: str) -> dict[str, Any]:
    description, gpu, price = TYPES[name]
    return {
        "name": name,
        "description": description,
        "gpu_description": gpu,
        "price_cents_per_hour": price,
        "specs": {"vcpus": 30, "memory_gib": 200, "storage_gib": 1400, "gpus": 1},
    }


def _error(code: str, message: str, suggestion: str | None = None) -> dict:
    error = {"code": code, "message": message}
    if suggestion:
        error["suggestion"] = suggestion
    return {"error": error}
