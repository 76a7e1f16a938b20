"""secret_age: a managed secret older than its maximum age fails, with every age reported."""

import time

import dagster as dg

from resources.secret_store import SecretStoreResource

DAY = 86_400.0


def secret_age_check(asset_key: dg.AssetKey, secret: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset_key,
        name="secret_age",
        description=f"{secret} was rotated within its maximum age.",
    )
    def _check(secret_store: SecretStoreResource) -> dg.AssetCheckResult:
        state = secret_store.store().read(secret)
        if not state or not state.get("current"):
            return dg.AssetCheckResult(
                passed=False,
                description=f"{secret} has never been set; run `sophia db roles`",
            )
        now = time.time()
        age = (now - state["current"]["rotated_at"]) / DAY
        limit = float(state.get("max_age_days", 30))
        previous = state.get("previous") or {}
        metadata = {"age_days": round(age, 3), "max_age_days": limit}
        if previous.get("rotated_at"):
            metadata["previous_age_days"] = round((now - previous["rotated_at"]) / DAY, 3)
        return dg.AssetCheckResult(
            passed=age <= limit,
            description=None
            if age <= limit
            else f"{secret} is {age:.1f} days old (max {limit:g}); rotate it",
            metadata=metadata,
        )

    return _check
