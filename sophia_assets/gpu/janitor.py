"""The janitor's judgement: which of our Lambda instances must go.

An instance is ours when it carries the `sophia=embedding` tag and this deployment's
`sophia-deployment` tag (another deployment on the same account judges its own). It is
terminated when its run is finished or unknown, when its run is in flight but has not beaten
its heartbeat for `heartbeat_timeout_s` (the run worker died, e.g. SIGKILL), when its run
uses another instance (a duplicate left by an unanswered launch), or when it outlived
`max_age_s`.
First sightings are remembered by the caller (the sensor's cursor), since the API reports no
launch time."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from sophia_assets.gpu.lambda_api import Instance
from sophia_assets.gpu.session import DEPLOYMENT_TAG, GONE, INSTANCE_TAG, OURS_TAG, RUN_TAG
from sophia_assets.run_status import IN_FLIGHT

HEARTBEAT_TAG = "sophia/lambda_heartbeat"


@dataclass(frozen=True)
class Verdict:
    instance: Instance
    reason: str


def is_ours(instance: Instance, deployment: str) -> bool:
    """Rented by this deployment's GPU runner."""
    return (
        instance.tags.get(OURS_TAG) == "embedding"
        and instance.tags.get(DEPLOYMENT_TAG) == deployment
    )


def judge(
    instances: list[Instance],
    dagster: dg.DagsterInstance,
    first_seen: dict[str, float],
    now: float,
    heartbeat_timeout_s: float,
    max_age_s: float,
    deployment: str = "default",
) -> list[Verdict]:
    verdicts = []
    for instance in instances:
        if not is_ours(instance, deployment) or instance.status in (*GONE, "terminating"):
            continue
        age = now - first_seen.setdefault(instance.id, now)
        reason = _reason(instance, dagster, age, now, heartbeat_timeout_s, max_age_s)
        if reason:
            verdicts.append(Verdict(instance, reason))
    return verdicts


def _reason(instance, dagster, age, now, heartbeat_timeout_s, max_age_s) -> str | None:
    if age > max_age_s:
        return f"outlived the maximum age of {max_age_s:.0f} s"
    run_id = instance.tags.get(RUN_TAG)
    run = dagster.get_run_by_id(run_id) if run_id else None
    if run is None:
        # launched by a run this Dagster does not know: give a launch a moment to be recorded
        return f"its run {run_id or '(untagged)'} is unknown here" if age > 120 else None
    if run.status not in IN_FLIGHT:
        return f"its run {run_id} is {run.status.value}"
    used = run.tags.get(INSTANCE_TAG)
    if used and used != instance.id and age > 120:  # the run may not have recorded it yet
        return f"a duplicate: its run {run_id} uses {used}"
    beat = float(run.tags.get(HEARTBEAT_TAG, 0)) or None
    silent = now - beat if beat else age
    if silent > heartbeat_timeout_s:
        return f"its run {run_id} is {run.status.value} but silent for {silent:.0f} s (worker gone)"
    return None
