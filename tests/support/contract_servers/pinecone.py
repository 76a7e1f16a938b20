"""A loopback Pinecone data plane that follows the published contract
(`tests/contracts/pinecone-db-data-2026-04.oas.yaml`; requests and responses validated by
`ContractServer`). It enforces Pinecone's documented limits (1,000 records and 2 MB per upsert,
1,000 ids per fetch or delete) and can be told to fail requests (429, 500) to exercise the
client's retries."""

from __future__ import annotations

import json
import math
import threading
from collections import deque
from typing import Any

from tests.support.contract_servers.contract_server import ContractServer

MAX_METADATA_BYTES = 40 * 1024  # per record
MAX_UPSERT_RECORDS = 1000
MAX_REQUEST_BYTES = 2 * 1024 * 1024


class PineconeContractServer(ContractServer):
    def __init__(self, dimension: int = 384):
        super().__init__("pinecone-db-data-2026-04.oas.yaml")
        self.host = self.url
        self.dimension = dimension
        self.namespaces: dict[str, dict[str, tuple[list[float], dict[str, Any]]]] = {}
        self.requests: list[tuple[str, int]] = []  # (path, status) in arrival order
        self.faults: deque[tuple[str, int]] = deque()  # (path, status) to answer next
        self.fail_on_call: dict[tuple[str, int], int] = {}  # (path, n-th call) -> status
        self._calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def answer(
        self,
        path: str,
        method: str,
        data: dict,
        query: dict[str, Any],
        headers: dict[str, str],
        size: int,
    ) -> tuple[int, dict]:
        status, payload = self._answer(path, method, data, query, size)
        with self._lock:
            self.requests.append((path, status))
        return status, payload

    def _answer(
        self, path: str, method: str, data: dict, query: dict[str, Any], size: int
    ) -> tuple[int, dict]:
        with self._lock:
            self._calls[path] = self._calls.get(path, 0) + 1
            scripted = self.fail_on_call.pop((path, self._calls[path]), None)
            if scripted is None and self.faults and self.faults[0][0] == path:
                scripted = self.faults.popleft()[1]
        if scripted is not None:
            return scripted, _status(scripted, "injected failure")
        try:
            route = {
                ("post", "/vectors/upsert"): self._upsert,
                ("post", "/vectors/delete"): self._delete,
                ("get", "/vectors/fetch"): self._fetch,
                ("post", "/query"): self._query,
                ("post", "/describe_index_stats"): self._stats,
                ("get", "/vectors/list"): self._list,
            }[(method, path)]
        except KeyError:
            return 404, _status(404, f"no route {method.upper()} {path}")
        return route(data, query, size)

    # -- the data plane ---------------------------------------------------------------------

    def _space(self, namespace: str | None) -> dict:
        return self.namespaces.setdefault(namespace or "", {})

    def _upsert(self, data: dict, query: dict, size: int) -> tuple[int, dict]:
        vectors = data.get("vectors") or []
        if len(vectors) > MAX_UPSERT_RECORDS or size > MAX_REQUEST_BYTES:
            return 400, _status(
                400,
                f"upsert of {len(vectors)} records / {size} bytes is over "
                "the limit of 1000 records and 2 MB",
            )
        for vector in vectors:
            metadata = vector.get("metadata") or {}
            metadata_bytes = len(
                json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode()
            )
            if metadata_bytes > MAX_METADATA_BYTES:
                return 400, _status(
                    400,
                    f"metadata size is {metadata_bytes} bytes, which exceeds the limit of "
                    f"{MAX_METADATA_BYTES} bytes per vector",
                )
            if len(vector["values"]) != self.dimension:
                return 400, _status(
                    400,
                    f"vector {vector['id']} has dimension "
                    f"{len(vector['values'])}, not {self.dimension}",
                )
        space = self._space(data.get("namespace"))
        with self._lock:
            for vector in vectors:
                space[vector["id"]] = (vector["values"], vector.get("metadata") or {})
        return 200, {"upsertedCount": len(vectors)}

    def _delete(self, data: dict, query: dict, size: int) -> tuple[int, dict]:
        ids = data.get("ids") or []
        if len(ids) > 1000:
            return 400, _status(400, "delete of more than 1000 ids")
        space = self._space(data.get("namespace"))
        with self._lock:
            for vid in ids:
                space.pop(vid, None)
        return 200, {}

    def _fetch(self, data: dict, query: dict, size: int) -> tuple[int, dict]:
        ids = query.get("ids") or []
        ids = [ids] if isinstance(ids, str) else ids
        space = self._space(query.get("namespace"))
        found = {
            vid: {"id": vid, "values": space[vid][0], "metadata": space[vid][1]}
            for vid in ids
            if vid in space
        }
        return 200, {
            "vectors": found,
            "namespace": query.get("namespace", ""),
            "usage": {"readUnits": 1},
        }

    def _query(self, data: dict, query: dict, size: int) -> tuple[int, dict]:
        space = self._space(data.get("namespace"))
        target = data["vector"]
        wanted = data.get("filter") or {}
        scored = []
        for vid, (values, metadata) in space.items():
            if all(
                metadata.get(k) == (v.get("$eq") if isinstance(v, dict) else v)
                for k, v in wanted.items()
            ):
                scored.append((_cosine(target, values), vid, metadata))
        scored.sort(reverse=True)
        matches = [
            {
                "id": vid,
                "score": score,
                "values": [],
                **({"metadata": meta} if data.get("includeMetadata") else {}),
            }
            for score, vid, meta in scored[: data.get("topK", 10)]
        ]
        return 200, {
            "matches": matches,
            "namespace": data.get("namespace", ""),
            "usage": {"readUnits": 5},
        }

    def _stats(self, data: dict, query: dict, size: int) -> tuple[int, dict]:
        return 200, {
            "namespaces": {ns: {"vectorCount": len(v)} for ns, v in self.namespaces.items()},
            "dimension": self.dimension,
            "indexFullness": 0.0,
            "totalVectorCount": sum(len(v) for v in self.namespaces.values()),
        }

    def _list(self, data: dict, query: dict, size: int) -> tuple[int, dict]:
        space = self._space(query.get("namespace"))
        ids = sorted(vid for vid in space if vid.startswith(query.get("prefix", "")))
        start = int(query.get("paginationToken") or 0)
        limit = int(query.get("limit") or 100)
        page = ids[start : start + limit]
        answer: dict = {
            "vectors": [{"id": vid} for vid in page],
            "namespace": query.get("namespace", ""),
            "usage": {"readUnits": 1},
        }
        if start + limit < len(ids):
            answer["pagination"] = {"next": str(start + limit)}
        return 200, answer


def _status(code: int, message: str) -> dict:
    grpc = {400: 3, 404: 5, 429: 8, 500: 13}.get(code, 2)
    return {"code": grpc, "message": message, "details": []}


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
