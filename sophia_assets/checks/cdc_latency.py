"""The CDC latency SLA: p99 capture latency over the recent window. The public target is
100 ms (fail above); we warn above 25 ms."""

import dagster as dg

from resources.flow_runtime import FlowRuntimeResource

FAIL_P99_MS = 100.0
WARN_P99_MS = 25.0


def latency_check(collection_key: dg.AssetKey) -> dg.AssetChecksDefinition:
    collection = "/".join(collection_key.path)

    @dg.asset_check(
        asset=collection_key,
        name="capture_latency_p99",
        description=f"p99 of source commit -> journal commit over the last window: fails above "
        f"{FAIL_P99_MS:.0f} ms, warns above {WARN_P99_MS:.0f} ms.",
    )
    def _check(flow_runtime: FlowRuntimeResource) -> dg.AssetCheckResult:
        figures = flow_runtime.latency(collection)
        metadata = {
            **figures.as_metadata(),
            "window_minutes": flow_runtime.latency_window_minutes,
            "fail_above_ms": FAIL_P99_MS,
            "warn_above_ms": WARN_P99_MS,
        }
        if figures.p99_ms is None:
            return dg.AssetCheckResult(
                passed=True, metadata={**metadata, "note": "no captured changes in the window"}
            )
        if figures.p99_ms > FAIL_P99_MS:
            return dg.AssetCheckResult(
                passed=False, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata
            )
        if figures.p99_ms > WARN_P99_MS:
            return dg.AssetCheckResult(
                passed=False, severity=dg.AssetCheckSeverity.WARN, metadata=metadata
            )
        return dg.AssetCheckResult(passed=True, metadata=metadata)

    return _check
