"""The names under which flow tasks keep their checkpoints in `flow.checkpoints` and take their
advisory locks: one place, so a capture, a derivation and an index never collide and every
reader (sensors, checks, the CLI) asks for the same key as the writer."""


def capture_task(capture: str) -> str:
    """A capture's checkpoint: its catalog name (e.g. `sophia/source-postgres`)."""
    return capture


def capture_lock(capture: str) -> str:
    """The advisory lock one process holds while it runs the capture."""
    return f"flow.capture:{capture_task(capture)}"


def derivation_task(collection: str) -> str:
    """A derivation's checkpoint and state, by the collection it derives."""
    return f"derive:{collection}"


def index_task(index_name: str) -> str:
    """A vector index's applied offset, by index name."""
    return f"index:{index_name}"
