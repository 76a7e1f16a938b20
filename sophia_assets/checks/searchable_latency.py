"""The end-to-end SLA: p99 of source commit -> searchable in the index, over the recent
window, from the index materialization's own records (`flow.searchable`). The public target is
100 ms (warn above); above a second the live path is not live (fail). A window with no changes
warns: no figure is not a passing one."""

import dagster as dg

from resources.flow_runtime import FlowRuntimeResource
from sophia_assets.vectors.searchable import SearchableFigures

CHECK_NAME = "searchable_latency_p99"
FAIL_P99_MS = 1000.0
WARN_P99_MS = 100.0


def verdict(
    figures: SearchableFigures, window_minutes: float
) -> tuple[bool, dg.AssetCheckSeverity | None, dict]:
    """(passed, severity when not, metadata): the check's answer, for the check itself and for
    the sensor that reports it with each runless materialization of the index."""
    metadata: dict = {
        **figures.as_metadata(),
        "window_minutes": window_minutes,
        "fail_above_ms": FAIL_P99_MS,
        "warn_above_ms": WARN_P99_MS,
    }
    if figures.p99_ms is None:
        metadata["note"] = "no change became searchable in the window"
        return False, dg.AssetCheckSeverity.WARN, metadata
    if figures.p99_ms > FAIL_P99_MS:
        return False, dg.AssetCheckSeverity.ERROR, metadata
    if figures.p99_ms > WARN_P99_MS:
        return False, dg.AssetCheckSeverity.WARN, metadata
    return True, None, metadata


def searchable_latency_check(index_key: dg.AssetKey, index_name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=index_key,
        name=CHECK_NAME,
        description=f"p99 of source commit -> searchable in {index_name} over the last window: "
        f"fails above {FAIL_P99_MS:.0f} ms, warns above {WARN_P99_MS:.0f} ms or when no change "
        "arrived in the window.",
    )
    def _check(flow_runtime: FlowRuntimeResource) -> dg.AssetCheckResult:
        window = flow_runtime.latency_window_minutes
        passed, severity, metadata = verdict(flow_runtime.searchable(index_name), window)
        if passed:
            return dg.AssetCheckResult(passed=True, metadata=metadata)
        return dg.AssetCheckResult(passed=False, severity=severity, metadata=metadata)

    return _check
