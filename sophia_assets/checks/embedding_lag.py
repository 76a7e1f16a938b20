"""The embedding lag: how long the oldest change of the source collection has waited to be
embedded. Caught up passes whatever the time since the last materialization; a change waiting
over 5 minutes warns (longer than a batch run takes to start and embed), over 15 minutes
fails (the freshness policy's warning line: the index is stale by then)."""

import dagster as dg

from resources.flow_runtime import FlowRuntimeResource
from sophia_assets.checks.verdicts import Verdict, check_result
from sophia_assets.embedding.lag import EmbeddingLag

CHECK_NAME = "embedding_lag"
WARN_AGE_S = 300.0
FAIL_AGE_S = 900.0


def verdict(lag: EmbeddingLag) -> Verdict:
    """(passed, severity when not, metadata), for the check and for the Estuary sensor."""
    metadata: dict = {
        **lag.as_metadata(),
        "warn_above_s": WARN_AGE_S,
        "fail_above_s": FAIL_AGE_S,
    }
    age = lag.oldest_age_s or 0.0
    if age > FAIL_AGE_S:
        return False, dg.AssetCheckSeverity.ERROR, metadata
    if age > WARN_AGE_S:
        return False, dg.AssetCheckSeverity.WARN, metadata
    return True, None, metadata


def embedding_lag_check(derived_key: dg.AssetKey, source: str) -> dg.AssetChecksDefinition:
    derived = "/".join(derived_key.path)

    @dg.asset_check(
        asset=derived_key,
        name=CHECK_NAME,
        description=f"How long the oldest change of {source} has waited to be embedded: warns "
        f"above {WARN_AGE_S / 60:.0f} min, fails above {FAIL_AGE_S / 60:.0f} min; caught up "
        "passes.",
    )
    def _check(flow_runtime: FlowRuntimeResource) -> dg.AssetCheckResult:
        return check_result(verdict(flow_runtime.embedding_lag(source, derived)))

    return _check
