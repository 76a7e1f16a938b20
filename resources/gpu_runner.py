"""Where GPU-tagged embedding runs embed: two runners behind one resource.

- `LocalGpuRunner` (default): the embedding entrypoint as a Dagster Pipes subprocess on this
  machine's device.
- `LambdaGpuRunner`: a Lambda Cloud instance per run, launched on the first configured
  type@region with capacity, the project shipped over SSH, the entrypoint run there through
  Pipes (logs and messages stream into the run), the vectors fetched back, and the instance
  terminated in every outcome. Cost figures become run metadata.

`configured_runner()` picks Lambda when `SOPHIA_LAMBDA_API_KEY` is set.
"""

import os
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import dagster as dg
from pydantic import Field

from sophia_assets.embedding.embedder import ModelCard
from sophia_assets.gpu.entrypoint_runs import EntrypointEmbedder, local_invoke, remote_invoke
from sophia_assets.gpu.janitor import HEARTBEAT_TAG
from sophia_assets.gpu.lambda_api import API_URL, REQUEST_INTERVAL_S, LambdaCloud
from sophia_assets.gpu.remote_env import UV, prepare_python, ship_project
from sophia_assets.gpu.session import Choice, LambdaSession, NoCapacity

API_KEY_ENV = "SOPHIA_LAMBDA_API_KEY"

DEFAULT_CHOICES = [
    "gpu_1x_a10@us-east-1",
    "gpu_1x_a10@us-west-1",
    "gpu_1x_a100@us-east-1",
    "gpu_1x_a100@us-west-1",
    "gpu_1x_h100_pcie@us-east-1",
]


class GpuRunner(dg.ConfigurableResource, ABC):
    batch_documents: int = Field(
        default=20_000, description="Documents per entrypoint call (one model load each)."
    )
    device: str = Field(default="auto", description="auto (CUDA when present), cpu or cuda:N")
    batch_size: int = 64

    @abstractmethod
    def session(
        self, context: dg.AssetExecutionContext, card: ModelCard
    ) -> AbstractContextManager[EntrypointEmbedder]:
        """An embedder backed by the entrypoint; everything it rented is released on exit."""


class LocalGpuRunner(GpuRunner):
    @contextmanager
    def session(
        self, context: dg.AssetExecutionContext, card: ModelCard
    ) -> Iterator[EntrypointEmbedder]:
        yield EntrypointEmbedder(card, local_invoke(context), self.device, self.batch_size)


class LambdaGpuRunner(GpuRunner):
    api_url: str = API_URL
    api_key_env: str = Field(default=API_KEY_ENV, description="Environment variable with the key.")
    choices: list[str] = Field(
        default=DEFAULT_CHOICES, description="Ordered type@region list; the first with capacity."
    )
    ssh_key_name: str = Field(default="sophia-embedding", description="Key name in Lambda Cloud.")
    ssh_private_key_path: str = Field(
        default="~/.ssh/sophia-embedding", description="That key's private half (a file)."
    )
    ssh_user: str = "ubuntu"
    ssh_port: int = 22
    remote_python: str = Field(
        default=UV, description="'uv' builds the locked environment there; else an interpreter."
    )
    remote_setup: str = Field(
        default="", description="A shell command run in the project folder there first."
    )
    deployment: str = Field(
        default="default",
        description="Tags the instances; the janitor only judges its own deployment's.",
    )
    firewall_rulesets: list[str] = Field(
        default=[], description="Lambda firewall ruleset ids attached at launch (port 22)."
    )
    active_timeout_s: float = 900.0
    ssh_timeout_s: float = 300.0
    poll_s: float = 5.0
    request_interval_s: float = Field(
        default=REQUEST_INTERVAL_S,
        description="Least time between API requests (Lambda Cloud's limit: one a second).",
    )
    heartbeat_s: float = 30.0
    fallback_to_local: bool = Field(
        default=False, description="Run locally when no configured type has capacity."
    )

    @classmethod
    def from_environment(cls) -> "LambdaGpuRunner":
        """SOPHIA_LAMBDA_* variables over the defaults (see the README)."""
        env = os.environ
        values: dict[str, object] = {}
        for field, name, cast in (
            ("api_url", "SOPHIA_LAMBDA_URL", str),
            ("ssh_key_name", "SOPHIA_LAMBDA_SSH_KEY_NAME", str),
            ("ssh_private_key_path", "SOPHIA_LAMBDA_SSH_KEY_PATH", str),
            ("ssh_user", "SOPHIA_LAMBDA_SSH_USER", str),
            ("ssh_port", "SOPHIA_LAMBDA_SSH_PORT", int),
            ("remote_python", "SOPHIA_LAMBDA_REMOTE_PYTHON", str),
            ("remote_setup", "SOPHIA_LAMBDA_SETUP", str),
            ("deployment", "SOPHIA_DEPLOYMENT", str),
            ("active_timeout_s", "SOPHIA_LAMBDA_ACTIVE_TIMEOUT_S", float),
            ("poll_s", "SOPHIA_LAMBDA_POLL_S", float),
            ("request_interval_s", "SOPHIA_LAMBDA_REQUEST_INTERVAL_S", float),
            ("heartbeat_s", "SOPHIA_LAMBDA_HEARTBEAT_S", float),
            ("device", "SOPHIA_LAMBDA_DEVICE", str),
        ):
            if env.get(name):
                values[field] = cast(env[name])
        for field, name in (
            ("choices", "SOPHIA_LAMBDA_CHOICES"),
            ("firewall_rulesets", "SOPHIA_LAMBDA_FIREWALL_RULESETS"),
        ):
            if env.get(name):
                values[field] = [item.strip() for item in env[name].split(",") if item.strip()]
        if env.get("SOPHIA_LAMBDA_FALLBACK_LOCAL"):
            values["fallback_to_local"] = env["SOPHIA_LAMBDA_FALLBACK_LOCAL"] in ("1", "true")
        return cls(**values)

    def client(self) -> LambdaCloud:
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise dg.Failure(
                f"{self.api_key_env} is not set; put a Lambda Cloud API key there "
                "(dashboard -> API keys) or use the local runner"
            )
        return LambdaCloud(key, self.api_url, request_interval_s=self.request_interval_s)

    @contextmanager
    def session(
        self, context: dg.AssetExecutionContext, card: ModelCard
    ) -> Iterator[EntrypointEmbedder]:
        beat = _Heartbeat(context, self.heartbeat_s)
        with self.client() as client, tempfile.TemporaryDirectory(prefix="sophia-ssh-") as tmp:
            rented = LambdaSession(
                client,
                [Choice.parse(c) for c in self.choices],
                ssh_key_name=self.ssh_key_name,
                ssh_user=self.ssh_user,
                ssh_key_path=Path(self.ssh_private_key_path).expanduser(),
                known_hosts=Path(tmp) / "known_hosts",
                run_id=context.run.run_id,
                log=context.log.info,
                deployment=self.deployment,
                firewall_rulesets=self.firewall_rulesets,
                ssh_port=self.ssh_port,
                active_timeout_s=self.active_timeout_s,
                ssh_timeout_s=self.ssh_timeout_s,
                poll_s=self.poll_s,
                heartbeat=beat,
            )
            try:
                rented.__enter__()
            except NoCapacity as err:
                if not self.fallback_to_local:
                    raise dg.Failure(str(err)) from err
                context.log.warning(f"{err}; falling back to the local runner")
                rented = None
            except BaseException:
                if rented.figures.instance_id:  # launched, then given up and terminated
                    _report_costs(context, rented.figures.metadata())
                raise
            if rented is None:
                yield EntrypointEmbedder(card, local_invoke(context), self.device, self.batch_size)
                return
            embedder = None
            try:
                workdir = f"sophia-{context.run.run_id[:8]}"
                with beat.kept_alive():  # a cold `uv sync` there can take minutes
                    digest = ship_project(rented.target, workdir)
                    context.log.info(f"project {digest[:12]} shipped to {rented.target.host}")
                    python = prepare_python(
                        rented.target, workdir, self.remote_python, self.remote_setup
                    )
                embedder = EntrypointEmbedder(
                    card,
                    remote_invoke(context, rented.target, workdir, python, on_line=beat),
                    self.device,
                    self.batch_size,
                )
                yield embedder
            finally:
                rented.close()
                if embedder is not None:
                    rented.figures.compute_s = embedder.compute_s
                    embedder.metadata.update(rented.figures.metadata())
                _report_costs(context, rented.figures.metadata())


class _Heartbeat:
    """Marks the run as alive (a run tag) so the janitor can tell a dead run worker."""

    def __init__(self, context: dg.AssetExecutionContext, every_s: float):
        self.context, self.every_s, self.last = context, every_s, 0.0
        self._lock = threading.Lock()

    def __call__(self, tags: dict[str, str] | None = None) -> None:
        if tags or time.time() - self.last >= self.every_s:
            self._beat(tags or {})

    def _beat(self, tags: dict[str, str]) -> None:
        with self._lock:
            self.last = time.time()
            self.context.instance.add_run_tags(
                self.context.run.run_id, {**tags, HEARTBEAT_TAG: str(int(self.last))}
            )

    @contextmanager
    def kept_alive(self) -> Iterator[None]:
        """Beats from a thread while a long blocking step runs: the janitor would take a
        silent run for a dead worker."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.every_s):
                self._beat({})

        thread = threading.Thread(target=beat, name="lambda-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def _report_costs(context: dg.AssetExecutionContext, metadata: dict[str, object]) -> None:
    context.log.info("Lambda Cloud: " + ", ".join(f"{k[7:]}={v}" for k, v in metadata.items()))
    context.instance.add_run_tags(
        context.run.run_id,
        {
            "sophia/lambda_instance_type": str(metadata["lambda/instance_type"]),
            "sophia/lambda_estimated_cost_usd": str(metadata["lambda/estimated_cost_usd"]),
        },
    )


def configured_runner() -> GpuRunner:
    return LambdaGpuRunner.from_environment() if os.environ.get(API_KEY_ENV) else LocalGpuRunner()
