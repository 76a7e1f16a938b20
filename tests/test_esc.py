"""The ESC resource against a loopback server answering the open/read calls the
`pulumi-esc-sdk` client makes: opened once per run's step, its `environmentVariables` handed to
the other resources through the environment, and nothing of it in the logs."""

from __future__ import annotations

import os

import dagster as dg
import pytest

from resources.esc import EscResource
from resources.postgres import PostgresResource
from sophia_assets.contracts.esc import TOKEN, EscLoopback
from sophia_assets.secrets.esc import EscError, open_environment

ENVIRONMENTS = {
    "acme/sophia/production": {
        "environmentVariables": {
            "SOPHIA_LAMBDA_API_KEY": {"fn::secret": "lambda-key-from-esc"},
            "SOPHIA_PINECONE_HOST": "idx.example.internal",
        },
        "pulumiConfig": {"sophia:namespace": "sophia"},
    }
}


@pytest.fixture
def esc(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PULUMI_ACCESS_TOKEN", TOKEN)
    for name in ("SOPHIA_LAMBDA_API_KEY", "SOPHIA_PINECONE_HOST"):
        monkeypatch.delenv(name, raising=False)
    with EscLoopback(ENVIRONMENTS) as server:
        yield server


def test_sdk_client_opens_and_reads_resolved_values(esc) -> None:
    values = open_environment("acme/sophia/production", TOKEN, esc.url)
    assert values["environmentVariables"] == {
        "SOPHIA_LAMBDA_API_KEY": "lambda-key-from-esc",
        "SOPHIA_PINECONE_HOST": "idx.example.internal",
    }
    assert values["pulumiConfig"] == {"sophia:namespace": "sophia"}
    assert [method for method, _ in esc.calls] == ["POST", "GET"]


def test_errors_name_the_fix_and_never_the_token(esc) -> None:
    with pytest.raises(EscError, match="set PULUMI_ACCESS_TOKEN"):
        open_environment("acme/sophia/production", None, esc.url)
    with pytest.raises(EscError, match="401") as raised:
        open_environment("acme/sophia/production", "wrong-token-value", esc.url)
    assert "wrong-token-value" not in str(raised.value)
    with pytest.raises(EscError, match="404"):
        open_environment("acme/sophia/missing", TOKEN, esc.url)
    with pytest.raises(EscError, match="<org>/<project>/<env>"):
        open_environment("production", TOKEN, esc.url)


def test_resource_opens_once_per_run_and_hands_values_to_other_resources(esc) -> None:
    seen = {}

    @dg.asset
    def first(postgres: PostgresResource) -> None:
        seen["first"] = os.environ.get("SOPHIA_LAMBDA_API_KEY")

    @dg.asset(deps=[first])
    def second(postgres: PostgresResource) -> None:
        seen["second"] = os.environ.get("SOPHIA_PINECONE_HOST")

    resource = EscResource(environment="acme/sophia/production", api_url=esc.url)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [first, second],
            instance=instance,
            resources={"postgres": PostgresResource(esc=resource)},
        )
        logs = "\n".join(e.user_message for e in instance.all_logs(result.run_id))
    assert seen == {"first": "lambda-key-from-esc", "second": "idx.example.internal"}
    assert esc.opens == 1  # one open session for the run (its steps share the process)
    assert "ESC acme/sophia/production: 2 variables set for this run" in logs
    assert "lambda-key-from-esc" not in logs


def test_unconfigured_resource_opens_nothing(esc) -> None:
    @dg.asset
    def plain(postgres: PostgresResource) -> None:
        pass

    dg.materialize([plain], resources={"postgres": PostgresResource(esc=EscResource())})
    assert esc.calls == []


def test_rotation_publishes_current_and_previous_to_esc(esc, source: str, tmp_path) -> None:
    from cdc import catalog_copy, load

    from sophia_assets.flow.credentials import RotatedLogin
    from sophia_assets.secrets.capture_login import set_up
    from sophia_assets.secrets.postgres_roles import SECRET, rotate
    from sophia_assets.secrets.store import EscSecretStore

    store = EscSecretStore("acme/sophia/production", TOKEN, esc.url)
    set_up(load(catalog_copy(tmp_path)), source, store)
    first = store.read(SECRET)["current"]
    rotate(source, store)
    published = store.read(SECRET)
    assert published["previous"] == first
    assert published["current"]["user"] != first["user"]
    # passwords are ESC secrets; what was there before is kept
    stored = esc.environments["acme/sophia/production"]
    current = stored["sophia"]["secrets"][SECRET]["current"]
    assert set(current["password"]) == {"fn::secret"}
    assert "SOPHIA_LAMBDA_API_KEY" in stored["environmentVariables"]
    import psycopg2

    psycopg2.connect(RotatedLogin(store, source).url()).close()  # the published login works
