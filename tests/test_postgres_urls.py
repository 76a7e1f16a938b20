"""Postgres URLs: another database on the same server keeps every option (the embedded
server's passfile), a password leaves the URL for a child's environment, and printed DSNs of
every form hide their passwords."""

from __future__ import annotations

import pytest

from sophia_assets.postgres.urls import database_of, masked, with_database, without_password

EMBEDDED = "postgresql://postgres@127.0.0.1:5433/sophia?passfile=%2Fh%2F.sophia%2Fpg.pass"


def test_another_database_keeps_the_options() -> None:
    other = with_database(EMBEDDED, "cdc_1")
    assert other == "postgresql://postgres@127.0.0.1:5433/cdc_1?passfile=%2Fh%2F.sophia%2Fpg.pass"
    assert database_of(other) == "cdc_1"


@pytest.mark.parametrize(
    ("url", "bare", "env"),
    [
        (
            "postgresql://app:p%40ss%2Fw%3Ard@db:5432/app",
            "postgresql://app@db:5432/app",
            {"PGPASSWORD": "p@ss/w:rd"},
        ),
        (
            "postgresql://app@db/app?sslmode=require&password=s3cret&sslpassword=k",
            "postgresql://app@db/app?sslmode=require",
            {"PGPASSWORD": "s3cret", "PGSSLPASSWORD": "k"},
        ),
        (EMBEDDED, EMBEDDED, {}),
    ],
)
def test_a_password_moves_from_the_url_to_the_environment(url, bare, env) -> None:
    assert without_password(url) == (bare, env)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("using postgresql://app:hunter2@db:5432/app", "using postgresql://app:***@db:5432/app"),
        (
            "postgres://u@h/d?password=hunter2&sslmode=require",
            "postgres://u@h/d?password=***&sslmode=require",
        ),
        ("host=db password=hunter2 dbname=app", "host=db password=*** dbname=app"),
        ("host=db password = 'hun ter2' dbname=app", "host=db password = *** dbname=app"),
        ("dsn: sslpassword=hunter2", "dsn: sslpassword=***"),
        (EMBEDDED, EMBEDDED),
    ],
)
def test_every_dsn_form_is_masked(text: str, shown: str) -> None:
    assert masked(text) == shown
    assert "hunter2" not in masked(text)
