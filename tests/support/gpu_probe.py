"""A job with one asset that embeds a fixed batch through the configured GPU runner: the
termination tests run it in-process and as a separate `dagster job execute` process (to
interrupt or kill it). The runner comes from the environment, as in the code location."""

import os
from pathlib import Path

import dagster as dg

from resources.embedder import EmbedderResource
from resources.gpu_runner import GpuRunner, configured_runner
from sophia_assets.embedding.batch import write_vectors

TEXTS = [
    "Return the sum of a sequence of numbers.",
    "Open a file and return a stream; raise OSError on failure.",
    "",
    "Compute the shortest path between two nodes of a weighted graph. " * 60,  # chunks
    "A rotation matrix about the z axis by the given angle.",
]
OUTPUT_ENV = "SOPHIA_TEST_VECTORS_OUT"


@dg.asset(name="gpu_probe")
def gpu_probe(context: dg.AssetExecutionContext, gpu_runner: GpuRunner) -> dg.MaterializeResult:
    card = EmbedderResource().card()
    with gpu_runner.session(context, card) as embedder:
        documents = embedder.embed_documents(TEXTS)
    if os.environ.get(OUTPUT_ENV):
        Path(os.environ[OUTPUT_ENV]).write_bytes(write_vectors(documents, card.dimensions))
    return dg.MaterializeResult(metadata={**embedder.summary(), **embedder.metadata})


gpu_probe_job = dg.define_asset_job("gpu_probe_job", selection=[gpu_probe])
defs = dg.Definitions(
    assets=[gpu_probe], jobs=[gpu_probe_job], resources={"gpu_runner": configured_runner()}
)
