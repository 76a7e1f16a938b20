"""The Lambda janitor: terminates our GPU instances that no live run owns.

A run terminates its own instance in every outcome it lives through; this sensor covers the
one it does not: the run worker killed outright (SIGKILL, a lost node), and anything older
than the maximum age. Each termination is reported as an observation of `lambda/gpu_instances`,
and each tick's figures go to the Pushgateway when one is set (the GPU alerts read them).
"""

import json
import time
from collections.abc import Callable

import dagster as dg

from resources.gpu_runner import LambdaGpuRunner
from resources.pushgateway import PushgatewayResource
from sophia_assets.gpu.janitor import is_ours, judge
from sophia_assets.gpu.lambda_api import LambdaCloudError
from sophia_assets.metrics.push import Figure

JANITOR_JOB = "sophia-gpu-janitor"  # the Pushgateway's job label of its figures

GPU_INSTANCES = dg.AssetKey(["lambda", "gpu_instances"])


def gpu_instances_spec() -> dg.AssetSpec:
    return dg.AssetSpec(
        GPU_INSTANCES,
        group_name="compute",
        kinds={"lambda"},
        description="Lambda Cloud GPU instances the platform rented; the lambda_janitor "
        "sensor reports each one it had to terminate.",
    )


def build_janitor_sensor(
    heartbeat_timeout_s: float = 600.0,
    max_age_s: float = 6 * 3600.0,
    minimum_interval_seconds: int = 60,
    now: Callable[[], float] = time.time,
) -> dg.SensorDefinition:
    @dg.sensor(
        name="lambda_janitor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Terminates Lambda GPU instances whose run is gone or that are too old.",
    )
    def _sensor(
        context: dg.SensorEvaluationContext,
        gpu_runner: LambdaGpuRunner,
        pushgateway: PushgatewayResource,
    ):
        first_seen = json.loads(context.cursor) if context.cursor else {}
        try:
            with gpu_runner.client() as client:
                instances = client.instances()
                verdicts = judge(
                    instances,
                    context.instance,
                    first_seen,
                    now(),
                    heartbeat_timeout_s,
                    max_age_s,
                    gpu_runner.deployment,
                )
                if verdicts:
                    client.terminate([v.instance.id for v in verdicts])
        except (LambdaCloudError, dg.Failure) as err:
            return dg.SensorResult(skip_reason=f"Lambda Cloud: {err}", cursor=context.cursor)
        live = {i.id for i in instances}
        ours = sum(is_ours(i, gpu_runner.deployment) for i in instances)
        _push_tick(pushgateway, gpu_runner.deployment, ours, len(verdicts), now())
        cursor = json.dumps({k: v for k, v in first_seen.items() if k in live})
        events = []
        for verdict in verdicts:
            context.log.warning(f"terminated {verdict.instance.id}: {verdict.reason}")
            events.append(
                dg.AssetObservation(
                    asset_key=GPU_INSTANCES,
                    metadata={
                        "action": "terminated by the janitor",
                        "instance_id": verdict.instance.id,
                        "instance_type": verdict.instance.instance_type,
                        "region": verdict.instance.region,
                        "run_id": verdict.instance.tags.get("dagster-run", ""),
                        "reason": verdict.reason,
                    },
                )
            )
        skip = None if events else f"{len(live)} instance(s) on the account; none to terminate"
        return dg.SensorResult(asset_events=events, cursor=cursor, skip_reason=skip)

    return _sensor


def _push_tick(
    pushgateway: PushgatewayResource, deployment: str, instances: int, terminated: int, at: float
) -> None:
    pushgateway.push(
        JANITOR_JOB,
        {"deployment": deployment},
        {
            "sophia_gpu_janitor_instances": Figure(
                "The deployment's Lambda instances the janitor saw on its last tick.", instances
            ),
            "sophia_gpu_janitor_terminated_instances": Figure(
                "Instances the janitor terminated on its last tick.", terminated
            ),
            "sophia_gpu_janitor_last_tick_timestamp_seconds": Figure(
                "When the janitor last looked at the account (Unix time).", at
            ),
        },
    )
