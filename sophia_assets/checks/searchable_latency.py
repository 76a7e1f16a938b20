"""The end-to-end SLA: p99 of source commit -> searchable in the index, over the recent
window, from the index materialization's own records (`flow.searchable`). The public target is
100 ms (warn above); above a second the live path is not live (fail). A window with no changes
warns: no figure is not a passing one."""

import dagster as dg

from resources.flow_runtime import FlowRuntimeResource
from sophia_assets.checks.verdicts import Verdict, check_result, p99_verdict
from sophia_assets.vectors.searchable import SearchableFigures

CHECK_NAME = "searchable_latency_p99"
FAIL_P99_MS = 1000.0
WARN_P99_MS = 100.0


def verdict(figures: SearchableFigures, window_minutes: float) -> Verdict:
    """For the check itself and for the sensor's runless reports of the index."""
    return p99_verdict(
        figures.as_metadata(), figures.p99_ms, window_minutes, FAIL_P99_MS, WARN_P99_MS,
        "no change became searchable in the window",
    )  # fmt: skip


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
        return check_result(verdict(flow_runtime.searchable(index_name), window))

    return _check
