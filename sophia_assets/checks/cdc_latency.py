"""The CDC latency SLA: p99 capture latency over the recent window. The public target is
100 ms (fail above); we warn above 25 ms. A window with no captured change warns: no figure
is not a passing one."""

import dagster as dg

from resources.flow_runtime import FlowRuntimeResource
from sophia_assets.flow.latency import LatencyFigures

CHECK_NAME = "capture_latency_p99"
FAIL_P99_MS = 100.0
WARN_P99_MS = 25.0


def verdict(
    figures: LatencyFigures, window_minutes: float
) -> tuple[bool, dg.AssetCheckSeverity | None, dict]:
    """(passed, severity when not, metadata): the check's answer, for the check itself and for
    the sensor that reports it with each runless materialization of the collection."""
    metadata: dict = {
        **figures.as_metadata(),
        "window_minutes": window_minutes,
        "fail_above_ms": FAIL_P99_MS,
        "warn_above_ms": WARN_P99_MS,
    }
    if figures.p99_ms is None:
        metadata["note"] = "no captured change in the window"
        return False, dg.AssetCheckSeverity.WARN, metadata
    if figures.p99_ms > FAIL_P99_MS:
        return False, dg.AssetCheckSeverity.ERROR, metadata
    if figures.p99_ms > WARN_P99_MS:
        return False, dg.AssetCheckSeverity.WARN, metadata
    return True, None, metadata


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
        passed, severity, metadata = verdict(flow_runtime.latency(collection), window)
        if passed:
            return dg.AssetCheckResult(passed=True, metadata=metadata)
        return dg.AssetCheckResult(passed=False, severity=severity, metadata=metadata)

    return _check
