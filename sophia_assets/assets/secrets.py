"""secrets/postgres_capture: the capture's rotated Postgres login, as an asset.

Materializing it rotates the login by the two-role scheme; the `rotate_secrets` schedule does
that weekly. Its metadata names the roles and the time, never a password."""

import dagster as dg

from resources.postgres import PostgresResource
from resources.secret_store import SecretStoreResource
from sophia_assets.secrets.postgres_roles import SECRET, rotate

CAPTURE_LOGIN = dg.AssetKey(["secrets", "postgres_capture"])
MANAGED = {CAPTURE_LOGIN: SECRET}  # asset -> secret store entry


@dg.asset(
    key=CAPTURE_LOGIN,
    group_name="secrets",
    kinds={"postgres"},
    description="The capture's login (sophia_capture_a/b by the two-role scheme); "
    "materializing rotates it. Set up once with `sophia db roles`.",
)
def capture_login(
    postgres: PostgresResource, secret_store: SecretStoreResource
) -> dg.MaterializeResult:
    rotation = rotate(postgres.url(), secret_store.store())
    return dg.MaterializeResult(
        metadata={
            "current_login": rotation.current,
            "previous_login": rotation.previous or "",
            "rotated_at": dg.MetadataValue.timestamp(rotation.rotated_at),
        }
    )


rotate_secrets_job = dg.define_asset_job(
    "rotate_secrets",
    selection=dg.AssetSelection.assets(*MANAGED),
    description="Rotates the credentials the platform owns.",
)
rotate_secrets_schedule = dg.ScheduleDefinition(
    name="rotate_secrets_weekly",
    job=rotate_secrets_job,
    cron_schedule="0 4 * * 1",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every Monday 04:00: a new capture login; the previous stays valid a week.",
)
