"""Remote GPU work: the Lambda Cloud API, SSH, Dagster Pipes over SSH and the rented session."""
