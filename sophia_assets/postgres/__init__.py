"""The platform's Postgres: the embedded local server (production uses a URL)."""
