"""The ESC resource against a loopback server answering the open/read calls the
`pulumi-esc-sdk` client makes: opened once per run's step, its `environmentVariables` handed to
the other resources through the environment, and nothing of it in the logs."""

from __future__ import annotations

import copy
import os

import dagster as dg
import pytest

from resources.esc import EscResource
from resources.postgres import PostgresResource
from sophia_assets.secrets import esc as esc_module
from sophia_assets.secrets.esc import EscError, open_environment
from tests.support.contract_servers.esc import TOKEN, EscLoopback

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
        monkeypatch.setenv(name, "")  # recorded, so what ESC sets is undone after the test
        monkeypatch.delenv(name)
    monkeypatch.setattr(esc_module, "_loaded", {})  # a fresh process, as far as ESC knows
    with EscLoopback(copy.deepcopy(ENVIRONMENTS)) as server:
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


def test_opened_once_per_run_and_handed_to_the_other_resources(esc, monkeypatch) -> None:
    monkeypatch.setenv("SOPHIA_ESC_ENVIRONMENT", "acme/sophia/production")
    monkeypatch.setenv("SOPHIA_ESC_URL", esc.url)
    monkeypatch.setenv("SOPHIA_TEST_PG", "postgresql://app@db.internal/sophia")
    seen = {}

    @dg.asset
    def first(postgres: PostgresResource) -> None:
        postgres.url()  # what every data-path step does before it connects
        seen["first"] = os.environ.get("SOPHIA_LAMBDA_API_KEY")

    @dg.asset(deps=[first])
    def second(postgres: PostgresResource, esc: EscResource) -> None:
        postgres.url()
        seen["second"] = os.environ.get("SOPHIA_PINECONE_HOST")
        seen["values"] = sorted(esc.values())

    resources = {
        "postgres": PostgresResource(url_env="SOPHIA_TEST_PG"),
        "esc": EscResource.from_environment(),
    }
    with dg.instance_for_test() as instance:
        result = dg.materialize([first, second], instance=instance, resources=resources)
        logs = "\n".join(e.user_message for e in instance.all_logs(result.run_id))
    assert seen == {
        "first": "lambda-key-from-esc",
        "second": "idx.example.internal",
        "values": ["environmentVariables", "pulumiConfig"],
    }
    assert esc.opens == 1  # one open session for the run
    assert "ESC acme/sophia/production: 2 variables set for this run" in logs
    assert "lambda-key-from-esc" not in logs


def test_unconfigured_opens_nothing(esc, monkeypatch) -> None:
    monkeypatch.delenv("SOPHIA_ESC_ENVIRONMENT", raising=False)
    monkeypatch.setenv("SOPHIA_TEST_PG", "postgresql://app@db.internal/sophia")

    @dg.asset
    def plain(postgres: PostgresResource, esc: EscResource) -> None:
        postgres.url()

    resources = {"postgres": PostgresResource(url_env="SOPHIA_TEST_PG"), "esc": EscResource()}
    dg.materialize([plain], resources=resources)
    assert esc.calls == []


def test_rotation_publishes_current_and_previous_to_esc(esc, source: str, tmp_path) -> None:
    from sophia_assets.secrets.capture_login import RotatedLogin, set_up
    from sophia_assets.secrets.postgres_roles import SECRET, rotate
    from sophia_assets.secrets.store import EscSecretStore
    from tests.support.cdc import catalog_copy, load

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


def test_an_esc_outage_while_serving_keeps_the_login_and_the_capture(
    esc, source: str, tmp_path, monkeypatch
) -> None:
    import itertools
    import threading
    import time
    import uuid

    from sophia_assets.flow.capture import CaptureRunner
    from sophia_assets.secrets.capture_login import RotatedLogin, set_up
    from sophia_assets.secrets.postgres_roles import rotate
    from sophia_assets.secrets.store import EscSecretStore
    from tests.support.cdc import CAPTURE, catalog_copy, load, sql

    monkeypatch.setenv("SOPHIA_ESC_TIMEOUT_S", "0.5")
    store = EscSecretStore("acme/sophia/production", TOKEN, esc.url)
    catalog = load(catalog_copy(tmp_path, slot=f"slot_{uuid.uuid4().hex[:8]}"))
    set_up(catalog, source, store)
    said: list[str] = []
    login = RotatedLogin(store, source, log=said.append, max_backoff_s=2.0)
    serving = CaptureRunner(catalog.captures[CAPTURE], catalog, login, source)
    stop = threading.Event()
    server = threading.Thread(target=serving.serve, args=(stop,))
    ids = itertools.count(900_001)
    checkpointed = (
        "SELECT coalesce(max(lsn), '0/0') >= %s::pg_lsn FROM flow.checkpoints WHERE task = %s"
    )

    def captured_now() -> None:
        """Writes a row and waits until the capture has checkpointed past it."""
        insert = f"INSERT INTO documents (id, title, body) VALUES ({next(ids)}, 't', 'b')"
        # inside the transaction: at or before its commit, whatever else writes WAL
        marker = sql(source, insert, "SELECT pg_current_wal_insert_lsn()::text")[0][0]
        deadline = time.monotonic() + 30
        while not _checkpointed(source, checkpointed, (marker, CAPTURE)):
            assert server.is_alive(), "the capture stopped"
            assert time.monotonic() < deadline, f"the capture stalled ({esc.outage}, {said})"
            time.sleep(0.05)  # polling the checkpoint table

    server.start()
    try:
        captured_now()
        for n, kind in enumerate(("stall", "fail")):
            esc.start_outage(kind)
            opens, started = esc.opens, time.monotonic()
            while login.failures < 2 * (n + 1):  # two failed reads in this outage
                assert time.monotonic() - started < 30, said
                captured_now()
            # backed off: fewer reads than one a second (the refresh interval) of outage
            assert esc.opens - opens <= 1 + (time.monotonic() - started) / 1.2
            esc.end_outage()
        assert any("keeping sophia_capture_a" in message for message in said), said
        assert not any(TOKEN in message for message in said)
        rotation = rotate(source, store)  # ESC is back: the capture follows the rotation
        deadline = time.monotonic() + 60
        while login.user() != rotation.current:
            assert time.monotonic() < deadline, said
            captured_now()
    finally:
        stop.set()
        server.join(timeout=60)
    assert not server.is_alive()


def _checkpointed(source: str, query: str, params: tuple) -> bool:
    import psycopg2.errors

    from tests.support.cdc import sql

    try:
        return sql(source, query, params=params)[0][0]
    except psycopg2.errors.UndefinedTable:  # the capture has not created its tables yet
        return False
