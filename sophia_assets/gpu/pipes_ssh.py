"""Dagster Pipes over SSH (Dagster has no SSH Pipes client).

The remote command gets the session's bootstrap environment (context injected through the
environment, messages written to its stdout); stdout and stderr come back merged over the SSH
connection, Pipes messages go to the session and every other line into the run's logs.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dagster as dg
from dagster_pipes import PipesDefaultMessageWriter

from sophia_assets.gpu.ssh import SSH_FAILED, SshError, SshTarget

PIPES_KEY = "__dagster_pipes_version"


class _StreamReader(dg.PipesMessageReader):
    """Messages arrive on the remote command's stdout; `PipesSshClient` hands them over."""

    handler: dg.PipesMessageHandler | None = None

    @contextmanager
    def read_messages(self, handler: dg.PipesMessageHandler) -> Iterator[Mapping[str, Any]]:
        self.handler = handler
        yield {PipesDefaultMessageWriter.STDIO_KEY: PipesDefaultMessageWriter.STDOUT}

    def no_messages_debug_text(self) -> str:
        return "Pipes messages are read from the remote command's stdout over SSH."


class PipesSshClient(dg.PipesClient):
    def __init__(self, target: SshTarget, on_line: Callable[[], None] = lambda: None):
        self.target = target
        self.on_line = on_line  # called for every line: the session's heartbeat

    def run(  # type: ignore[override]
        self,
        *,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        command: str,
        workdir: str,
        extras: Mapping[str, Any] | None = None,
    ) -> dg.PipesClientCompletedInvocation:
        reader = _StreamReader()
        with dg.open_pipes_session(
            context=context,
            context_injector=dg.PipesEnvContextInjector(),
            message_reader=reader,
            extras=extras,
        ) as session:
            env = " ".join(
                f"{name}={shlex.quote(value)}"
                for name, value in session.get_bootstrap_env_vars().items()
            )
            remote = f"cd {shlex.quote(workdir)} && exec env {env} {command} 2>&1"
            tail = self._stream(context, reader, remote)
        return dg.PipesClientCompletedInvocation(session, metadata={"ssh_tail": tail[-500:]})

    def _stream(self, context, reader: _StreamReader, remote: str) -> str:
        tail: deque[str] = deque(maxlen=30)
        process = subprocess.Popen(
            self.target.command(remote),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        try:
            assert process.stdout is not None and process.stderr is not None
            for line in process.stdout:
                self.on_line()
                message = _message(line)
                if message is not None and reader.handler is not None:
                    reader.handler.handle_message(message)
                elif line.strip():
                    tail.append(line.rstrip())
                    context.log.info(f"[{self.target.host}] {line.rstrip()}")
            returncode = process.wait()
            stderr = process.stderr.read()
        finally:
            if process.poll() is None:  # interrupted: the connection goes with us
                process.kill()
                process.wait()
        if returncode == SSH_FAILED:
            raise SshError(
                f"SSH to {self.target.address} dropped while the entrypoint ran: "
                f"{stderr.strip()[-500:] or 'connection closed'}"
            )
        if returncode != 0:
            last = "\n".join(list(tail)[-12:])
            raise dg.Failure(
                f"the embedding entrypoint on {self.target.address} exited with "
                f"{returncode}:\n{last}",
                metadata={"output_tail": "\n".join(tail)},
            )
        return "\n".join(tail)


def _message(line: str) -> dict | None:
    if PIPES_KEY not in line:
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) and PIPES_KEY in message else None
