"""The local flow runtime: Estuary source-postgres semantics on the project's own engine."""
