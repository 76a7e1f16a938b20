"""Which Dagster runs are still in flight: queued, starting, running, or being canceled (a
canceling run's process may still hold a rented GPU or a derivation's offsets). Every place
that asks "is a run still going?" uses this one set."""

import dagster as dg

IN_FLIGHT = frozenset(
    {
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    }
)
