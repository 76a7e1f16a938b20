"""Pulumi programs, one per stack (n8n, dagster, gpu-embedding), run by the infra/<stack>
assets through the Automation API and unit-tested with Pulumi's mocks. Secrets come from the
stack's config, which imports a Pulumi ESC environment; none is ever written in plain text."""
