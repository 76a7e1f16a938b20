"""The task names under which `flow.checkpoints` keeps each reader's position, and the
advisory-lock names that keep one process per task. Every writer and reader of those rows
names its task here, so a rename cannot leave a reader looking for the wrong row."""

from __future__ import annotations


def capture_task(capture: str) -> str:
    """A capture checkpoints under its catalog name (e.g. `sophia/source-postgres`)."""
    return capture


def capture_lock(task: str) -> str:
    """The advisory lock a running capture holds on the journal database."""
    return f"flow.capture:{task}"


def derivation_task(collection: str) -> str:
    """A derivation checkpoints (and locks) under its derived collection's name."""
    return f"derive:{collection}"


def index_task(index: str) -> str:
    """The vector index records the last applied vector_updates offset under its name."""
    return f"index:{index}"
