"""The CDC latency SLA: p99 capture latency over the recent window. The public target is
100 ms (fail above); we warn above 25 ms. A window with no captured change warns: no figure
is not a passing one."""

import dagster as dg

from resources.flow_runtime import FlowRuntimeResource
from sophia_assets.checks.verdicts import Verdict, check_result, p99_verdict
from sophia_assets.flow.latency import LatencyFigures

CHECK_NAME = "capture_latency_p99"
FAIL_P99_MS = 100.0
WARN_P99_MS = 25.0


def verdict(figures: LatencyFigures, window_minutes: float) -> Verdict:
    """For the check itself and for the sensor's runless reports of the collection."""
    return p99_verdict(
        figures.as_metadata(), figures.p99_ms, window_minutes, FAIL_P99_MS, WARN_P99_MS,
        "no captured change in the window",
    )  # fmt: skip


def latency_check(collection_key: dg.AssetKey) -> dg.AssetChecksDefinition:
    collection = "/".join(collection_key.path)

    @dg.asset_check(
        asset=collection_key,
        name=CHECK_NAME,
        description=f"p99 of source commit -> journal commit over the last window: fails above "
        f"{FAIL_P99_MS:.0f} ms, warns above {WARN_P99_MS:.0f} ms or when no change was "
        "captured in the window.",
    )
    def _check(flow_runtime: FlowRuntimeResource) -> dg.AssetCheckResult:
        window = flow_runtime.latency_window_minutes
        return check_result(verdict(flow_runtime.latency(collection), window))

    return _check
