"""The vector index resource: which engine keeps `pinecone/sophia-ai-vectors`, from config.

pgvector in the platform's Postgres by default; Pinecone when `SOPHIA_PINECONE_HOST` names an
index host, with the key read from the environment variable named by `api_key_env` at run time
(never config, so it never reaches the UI). The engines live in `sophia_assets/vectors/`."""

import os
from abc import ABC, abstractmethod

import dagster as dg
from pydantic import Field

from resources.postgres import PostgresResource
from sophia_assets.vectors import VectorIndex

PINECONE_HOST_ENV = "SOPHIA_PINECONE_HOST"


class VectorIndexResource(dg.ConfigurableResource, ABC):
    postgres: dg.ResourceDependency[PostgresResource]
    index_name: str = Field(default="sophia-ai-vectors", description="The index's name.")

    @abstractmethod
    def open(self, index_name: str | None = None) -> VectorIndex:
        """The engine for `index_name` (default: this resource's `index_name`)."""


class PgVectorResource(VectorIndexResource):
    """A pgvector table with an HNSW cosine index, in the platform's Postgres."""

    dimension: int = 384

    def open(self, index_name: str | None = None) -> VectorIndex:
        from sophia_assets.vectors.pgvector import PgVectorIndex

        return PgVectorIndex(self.postgres.connect, index_name or self.index_name, self.dimension)


class PineconeResource(VectorIndexResource):
    """Pinecone through the `pinecone` SDK."""

    host: str = Field(description="The index's data-plane host, e.g. https://x.svc.pinecone.io")
    namespace: str = "sophia"
    api_key_env: str = "SOPHIA_PINECONE_API_KEY"
    batch_records: int = Field(default=1000, le=1000)
    max_request_bytes: int = Field(default=2 * 1024 * 1024)
    retries: int = 6
    timeout_s: float = Field(default=20.0, description="Seconds one request may take.")

    def open(self, index_name: str | None = None) -> VectorIndex:
        from sophia_assets.vectors.pinecone import PineconeIndex

        key = os.environ.get(self.api_key_env)
        if not key:
            raise RuntimeError(
                f"{self.api_key_env} is not set; export the Pinecone API key "
                "there (it is read from the environment only)"
            )
        return PineconeIndex(
            self.postgres.connect,
            self.host,
            key,
            name=index_name or self.index_name,
            namespace=self.namespace,
            batch_records=self.batch_records,
            max_request_bytes=self.max_request_bytes,
            retries=self.retries,
            timeout_s=self.timeout_s,
        )


def configured_index(postgres: PostgresResource) -> VectorIndexResource:
    """Pinecone when `SOPHIA_PINECONE_HOST` names an index host (the key then comes from
    `SOPHIA_PINECONE_API_KEY`), pgvector in the platform's Postgres otherwise."""
    if os.environ.get(PINECONE_HOST_ENV):
        return PineconeResource(postgres=postgres, host=dg.EnvVar(PINECONE_HOST_ENV))
    return PgVectorResource(postgres=postgres)
