"""The last build of an image, as its asset recorded it: `repository:tag@digest`."""

import dagster as dg


def built_image(instance: dg.DagsterInstance, image_key: dg.AssetKey, needed_by: str) -> str:
    event = instance.get_latest_materialization_event(image_key)
    entry = event.asset_materialization.metadata.get("image") if event else None
    if entry is None:
        name = image_key.to_user_string()
        raise dg.Failure(
            f"{name} has never been built; materialize it before {needed_by} "
            f"(dagster asset materialize -m sophia_assets.definitions --select {name})"
        )
    return entry.value
