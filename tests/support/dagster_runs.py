"""Reading in-process Dagster results."""


def step_failure(result) -> str:
    """The failed step's error and its causes, as one text (from an in-process result)."""
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error, messages = event.step_failure_data.error, []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)
