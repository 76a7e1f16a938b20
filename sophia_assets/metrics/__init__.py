"""Prometheus metrics of the platform's long-running processes (`sophia flow serve`, the search
API) and of Dagster runs pushed to a Pushgateway. docs/monitoring.md lists every family."""
