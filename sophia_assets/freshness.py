"""The platform's freshness policy, applied to every asset the platform materializes: stale
after 15 minutes without a materialization (warning), failing after an hour."""

from datetime import timedelta

import dagster as dg

FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=1), warn_window=timedelta(minutes=15)
)
