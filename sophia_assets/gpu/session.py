"""One rented GPU for one Dagster run: launch on the first type and region with capacity, wait
until it is active and answers SSH with the host key handed to it at launch, and terminate it
in every outcome (success, failure, SSH drop, interrupt, never becoming active). A launch
that got no answer is never repeated blindly: the instances tagged with the run are listed
and one is adopted, the rest terminated. What it cost is reported as figures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from sophia_assets.gpu.host_key import HostKey
from sophia_assets.gpu.lambda_api import (
    Instance,
    InsufficientCapacity,
    LambdaCloud,
    LambdaCloudError,
    LaunchOutcomeUnknown,
    NotFound,
)
from sophia_assets.gpu.ssh import SshTarget

OURS_TAG = "sophia"  # value "embedding": the janitor's mark
RUN_TAG = "dagster-run"
INSTANCE_TAG = "sophia/lambda_instance"  # the run tag naming the instance the run uses
DEPLOYMENT_TAG = "sophia-deployment"  # a janitor touches only its own deployment's instances
RECONCILE_LISTINGS = 3  # an instance can take a moment to appear in the listing
GONE = ("terminated", "preempted")
_INTERRUPTS = (KeyboardInterrupt, dg.DagsterExecutionInterruptedError)


class NoCapacity(RuntimeError):
    """No configured instance type had capacity in any configured region."""


class InstanceNotActive(RuntimeError):
    """The instance did not become active in time, or stopped being usable."""


@dataclass(frozen=True)
class Choice:
    instance_type: str
    region: str

    @classmethod
    def parse(cls, text: str) -> Choice:
        kind, sep, region = text.partition("@")
        if not sep or not kind or not region:
            raise ValueError(f"instance choice {text!r}: write it as <instance type>@<region>")
        return cls(kind, region)

    def __str__(self) -> str:
        return f"{self.instance_type}@{self.region}"


@dataclass
class SessionFigures:
    instance_id: str | None = None
    instance_type: str | None = None
    region: str | None = None
    price_cents_per_hour: int = 0
    tried: list[str] = field(default_factory=list)
    launch_requested_at: float | None = None
    active_at: float | None = None
    terminated_at: float | None = None
    compute_s: float = 0.0

    def metadata(self) -> dict[str, object]:
        billed = self._span(self.launch_requested_at, self.terminated_at)
        return {
            "lambda/instance_id": self.instance_id or "",
            "lambda/instance_type": self.instance_type or "",
            "lambda/region": self.region or "",
            "lambda/launch_to_active_s": self._span(self.launch_requested_at, self.active_at),
            "lambda/compute_s": round(self.compute_s, 3),
            "lambda/launch_to_terminated_s": billed,
            "lambda/price_usd_per_hour": self.price_cents_per_hour / 100,
            "lambda/estimated_cost_usd": round(billed * self.price_cents_per_hour / 100 / 3600, 4),
            "lambda/tried": ", ".join(self.tried),
        }

    @staticmethod
    def _span(start: float | None, end: float | None) -> float:
        return round(end - start, 3) if start is not None and end is not None else 0.0


class LambdaSession:
    def __init__(
        self,
        client: LambdaCloud,
        choices: list[Choice],
        ssh_key_name: str,
        ssh_user: str,
        ssh_key_path: Path,
        known_hosts: Path,
        run_id: str,
        log: Callable[[str], None],
        deployment: str = "default",
        firewall_rulesets: list[str] | None = None,
        ssh_port: int = 22,
        active_timeout_s: float = 900.0,
        ssh_timeout_s: float = 300.0,
        terminate_timeout_s: float = 300.0,
        poll_s: float = 5.0,
        heartbeat: Callable[[dict[str, str]], None] = lambda tags: None,
    ):
        if not choices:
            raise ValueError("no instance types configured; set at least one type@region")
        self.client, self.choices, self.run_id, self.log = client, choices, run_id, log
        self.ssh_key_name, self.ssh_user, self.ssh_port = ssh_key_name, ssh_user, ssh_port
        self.ssh_key_path, self.known_hosts = ssh_key_path, known_hosts
        self.active_timeout_s, self.ssh_timeout_s = active_timeout_s, ssh_timeout_s
        self.terminate_timeout_s, self.poll_s = terminate_timeout_s, poll_s
        self.heartbeat = heartbeat
        self.deployment, self.firewall_rulesets = deployment, firewall_rulesets or []
        self.figures = SessionFigures()
        self.target: SshTarget | None = None
        self.host_key: HostKey | None = None
        self.uncertain = False  # a launch went unanswered: sweep the run's instances at close

    @property
    def tags(self) -> dict[str, str]:
        return {OURS_TAG: "embedding", RUN_TAG: self.run_id, DEPLOYMENT_TAG: self.deployment}

    def __enter__(self) -> LambdaSession:
        try:
            self._launch()
            self._wait_active()
            self.target.wait_ready(self.client.clock, self.ssh_timeout_s)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- launch -------------------------------------------------------------------------------

    def _launch(self) -> None:
        offered = {t.name: t for t in self.client.instance_types()}
        self.host_key = HostKey.generate(f"sophia-embed-{self.run_id[:8]}")
        self.figures.launch_requested_at = self.client.clock.monotonic()
        for choice in self.choices:
            kind = offered.get(choice.instance_type)
            if kind is None:
                self.figures.tried.append(f"{choice}: no such instance type")
                continue
            if choice.region not in kind.regions_with_capacity:
                self.figures.tried.append(f"{choice}: no capacity listed")
                continue
            try:
                instance_id = self.client.launch(
                    choice.region,
                    choice.instance_type,
                    self.ssh_key_name,
                    name=f"sophia-embed-{self.run_id[:8]}",
                    tags=self.tags,
                    user_data=self.host_key.cloud_init(),
                    firewall_rulesets=self.firewall_rulesets,
                )
            except InsufficientCapacity:
                self.figures.tried.append(f"{choice}: insufficient capacity at launch")
                continue
            except LaunchOutcomeUnknown as err:
                self.uncertain = True
                self.log(f"launch on {choice} got no answer ({err}); listing the run's instances")
                instance_id = self._adopt()
                if instance_id is None:
                    self.figures.tried.append(f"{choice}: launch unanswered, no instance found")
                    continue
                self.figures.tried.append(f"{choice}: launch unanswered, adopted {instance_id}")
            else:
                self.figures.tried.append(f"{choice}: launched {instance_id}")
            self.figures.instance_id = instance_id
            self.figures.instance_type, self.figures.region = choice.instance_type, choice.region
            self.figures.price_cents_per_hour = kind.price_cents_per_hour
            self.heartbeat({INSTANCE_TAG: instance_id})
            self.log(f"launched {instance_id} ({choice}, ${kind.price_cents_per_hour / 100}/h)")
            return
        raise NoCapacity("no Lambda Cloud capacity; tried " + "; ".join(self.figures.tried))

    def _mine(self) -> list[Instance]:
        """This run's live instances on the account, by tag."""
        return [
            i
            for i in self.client.instances()
            if i.tags.get(RUN_TAG) == self.run_id
            and i.tags.get(DEPLOYMENT_TAG) == self.deployment
            and i.status not in (*GONE, "terminating")
        ]

    def _adopt(self) -> str | None:
        """After an unanswered launch: keep one of the run's instances, terminate the rest."""
        for listing in range(RECONCILE_LISTINGS):
            if listing:
                self.client.clock.sleep(self.poll_s)
            found = self._mine()
            if found:
                keep, *extra = found
                if extra:
                    self.client.terminate([i.id for i in extra])
                    self.log(f"terminated duplicates {', '.join(i.id for i in extra)}")
                return keep.id
        return None

    def _wait_active(self) -> None:
        clock = self.client.clock
        deadline = self.figures.launch_requested_at + self.active_timeout_s
        while True:
            instance = self.client.instance(self.figures.instance_id)
            if instance.status == "active" and instance.ip:
                self.figures.active_at = clock.monotonic()
                self.host_key.pin(self.known_hosts, instance.ip, self.ssh_port)
                self.target = SshTarget(
                    instance.ip, self.ssh_user, self.ssh_key_path, self.known_hosts, self.ssh_port
                )
                self.log(
                    f"{instance.id} active at {instance.ip} after "
                    f"{self.figures.active_at - self.figures.launch_requested_at:.1f} s"
                )
                return
            if instance.status in (*GONE, "terminating"):
                raise InstanceNotActive(f"{instance.id} became {instance.status} while booting")
            if clock.monotonic() >= deadline:
                raise InstanceNotActive(
                    f"{instance.id} ({self.figures.instance_type}) still {instance.status} "
                    f"after {self.active_timeout_s:.0f} s; giving it up"
                )
            self.heartbeat({})
            clock.sleep(self.poll_s)

    # -- termination --------------------------------------------------------------------------

    def close(self) -> None:
        """Terminates the instance and waits until Lambda says it is gone. Interrupts that
        arrive meanwhile are held until it is done: a leaked GPU costs money every hour."""
        try:
            self._terminate_own()
        finally:
            if self.uncertain:
                self._sweep()

    def _sweep(self) -> None:
        """An unanswered launch may have created an instance that shows up only now."""
        self.uncertain = False
        try:
            stray = [i.id for i in self._mine() if i.id != self.figures.instance_id]
            if stray:
                self.client.terminate(stray)
                self.log(f"terminated {', '.join(stray)}, created by an unanswered launch")
        except LambdaCloudError as err:
            self.log(f"listing the run's instances failed ({err}); the lambda_janitor will look")

    def _terminate_own(self) -> None:
        instance_id = self.figures.instance_id
        if instance_id is None or self.figures.terminated_at is not None:
            return
        interrupted: BaseException | None = None
        clock = self.client.clock
        deadline = clock.monotonic() + self.terminate_timeout_s
        requested = False
        while clock.monotonic() < deadline:
            try:
                if not requested:
                    self.client.terminate([instance_id])
                    requested = True
                    self.log(f"terminating {instance_id}")
                status = self.client.instance(instance_id).status
                if status in GONE:
                    self.figures.terminated_at = clock.monotonic()
                    self.log(f"{instance_id} {status}")
                    break
            except NotFound:
                self.figures.terminated_at = clock.monotonic()
                break
            except LambdaCloudError as err:
                self.log(f"terminating {instance_id}: {err}; retrying")
            except _INTERRUPTS as err:
                interrupted = err
                continue
            try:
                clock.sleep(min(self.poll_s, 2.0))
            except _INTERRUPTS as err:
                interrupted = err
        else:
            self.log(
                f"{instance_id} not confirmed terminated after {self.terminate_timeout_s:.0f} s; "
                "the lambda_janitor sensor will retry"
            )
        if interrupted is not None:
            raise interrupted
