"""The search API's engine: an ASGI service over the vector index (FastAPI on uvicorn).

One concept per module: `models` (the typed requests and answers the OpenAPI document is
generated from), `keys` (API keys held as hashes), `ratelimit` (a token bucket per key),
`batching` (concurrent query embeddings in one model call), `journal` (the reduced view, vector
ids and the index's lag, on a pool of connections), `service` (search, documents, readiness),
`app` (routes, auth, errors). Free of Dagster: `sophia api serve` builds these from resources.
"""
