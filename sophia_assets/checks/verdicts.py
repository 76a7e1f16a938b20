"""A check's verdict, (passed, severity when not, metadata), as the checks return it and as
the Estuary sensor reports it with a runless materialization; and the p99 SLA verdict the
latency checks share: fail above one line, warn above another, warn when the window has no
figure (no figure is not a passing one)."""

from __future__ import annotations

import dagster as dg

Verdict = tuple[bool, dg.AssetCheckSeverity | None, dict]


def p99_verdict(
    figures: dict, p99_ms: float | None, window_minutes: float, fail_ms: float, warn_ms: float,
    empty_note: str,
) -> Verdict:  # fmt: skip
    metadata = {
        **figures,
        "window_minutes": window_minutes,
        "fail_above_ms": fail_ms,
        "warn_above_ms": warn_ms,
    }
    if p99_ms is None:
        return False, dg.AssetCheckSeverity.WARN, {**metadata, "note": empty_note}
    if p99_ms > fail_ms:
        return False, dg.AssetCheckSeverity.ERROR, metadata
    if p99_ms > warn_ms:
        return False, dg.AssetCheckSeverity.WARN, metadata
    return True, None, metadata


def check_result(verdict: Verdict) -> dg.AssetCheckResult:
    passed, severity, metadata = verdict
    if passed:
        return dg.AssetCheckResult(passed=True, metadata=metadata)
    return dg.AssetCheckResult(passed=False, severity=severity, metadata=metadata)
