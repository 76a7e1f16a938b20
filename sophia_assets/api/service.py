"""The service behind the routes: search, a document and its vector ids, readiness.

The model is loaded once (by the caller) and runs on its own threads through the batcher; index
queries and reads of the reduced view run on a thread pool the size of the connection pools,
so the event loop only parses, routes and serialises."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from sophia_assets.api.batching import EmbeddingBatcher
from sophia_assets.api.journal import JournalReader
from sophia_assets.api.models import (
    Check,
    DocumentResponse,
    Readiness,
    SearchHit,
    SearchRequest,
    SearchResponse,
)
from sophia_assets.api.pool import Pool
from sophia_assets.embedding.text_rule import TextRule
from sophia_assets.vectors import VectorIndex

CHUNKS_PER_DOCUMENT = 4  # asked of the index per wanted document: several chunks may share one


@dataclass(frozen=True)
class ServiceSettings:
    pool_size: int = 4
    # 1: no micro-batching. CPU per query measured here on one thread: torch 35 ms alone and
    # 20-24 ms in batches of 4; ONNX 11.1 ms alone, 10.4 in pairs, 13-14 in 4-8 (padding to
    # the longest costs more than the call saves). So ONNX embeds queries in pairs at most.
    max_batch: int = 2
    max_lag_seconds: float = 300.0
    # Model threads embedding at once: 2 on the ONNX backend, which may be called from
    # several threads; torch's tokenizer call changes shared settings, so 1 there.
    model_workers: int = 1


class SearchService:
    def __init__(
        self,
        embedder,
        index: VectorIndex,
        journal: JournalReader,
        settings: ServiceSettings | None = None,
        text_rule: TextRule | None = None,
    ):
        settings = settings or ServiceSettings()
        self.embedder = embedder
        self.index = index
        self.journal = journal
        self.settings = settings
        self.text_rule = text_rule or TextRule()
        self.model = getattr(embedder.card, "name", str(embedder.card))
        self.index_name = f"{index.backend}:{index.name}"
        self.batcher = EmbeddingBatcher(embedder.embed, settings.max_batch, settings.model_workers)
        self.sessions: Pool = Pool(self._open_session, settings.pool_size)
        self._db = ThreadPoolExecutor(settings.pool_size, thread_name_prefix="sophia-db")
        self.model_ready = False

    async def warm_up(self) -> None:
        """One embedding, so the first request does not pay for lazy initialisation."""
        await self.batcher.embed("warm up")
        self.model_ready = True

    async def search(self, request: SearchRequest) -> SearchResponse:
        started = time.perf_counter()
        vector = await self.batcher.embed(request.text)
        metadata_filter = {k: {"$eq": v} for k, v in (request.filter or {}).items()} or None
        fetch = min(request.top_k * CHUNKS_PER_DOCUMENT, 1000)
        matches = await self._blocking(self._query, vector, fetch, metadata_filter)
        best: dict[str, Any] = {}
        for match in matches:
            key = match.metadata.get("source_key", match.id.rsplit(":", 1)[0])
            if str(key) not in best or match.score > best[str(key)].score:
                best[str(key)] = SearchHit(
                    id=match.id,
                    score=round(match.score, 6),
                    title=str(match.metadata.get("title", "")),
                    chunk=int(match.metadata.get("chunk", _chunk_of(match.id))),
                    source_key=key,
                )
        hits = sorted(best.values(), key=lambda h: -h.score)[: request.top_k]
        if request.include_text and hits:
            documents = await self._blocking(self.journal.documents, [h.source_key for h in hits])
            texts = {
                str(h.source_key): self.text_rule.text(d)
                for h in hits
                if (d := documents.get(str(h.source_key)))
            }
            chunks = await self.batcher.on_model_thread(self._chunk_texts, hits, texts)
            hits = [h.model_copy(update={"text": t}) for h, t in zip(hits, chunks, strict=True)]
        took = round((time.perf_counter() - started) * 1000, 3)
        return SearchResponse(results=hits, model=self.model, index=self.index_name, took_ms=took)

    async def document(self, source_key: str) -> DocumentResponse | None:
        found = await self._blocking(self.journal.document, source_key)
        if found is None:
            return None
        expected = [f"{found.key}:{n}" for n in range(found.chunks)]
        present = await self._blocking(self.index.fetch, expected) if expected else {}
        return DocumentResponse(
            source_key=found.key,
            collection=self.journal.source,
            document=found.document,
            journal_offset=found.offset,
            vector_ids=[i for i in expected if i in present],
        )

    async def readiness(self) -> Readiness:
        checks = [
            Check(
                name="model",
                ok=self.model_ready,
                detail=f"{self.model} loaded" if self.model_ready else "model not loaded yet",
            )
        ]
        checks += await self._blocking(self._index_checks)
        return Readiness(ready=all(c.ok for c in checks), checks=checks)

    def _index_checks(self) -> list[Check]:
        dimensions = getattr(self.embedder.card, "dimensions", 384)
        try:
            self._query([1.0] + [0.0] * (dimensions - 1), 1, None)
            applied = self.index.applied_offset()
        except Exception as err:  # any failure means "not reachable"; say which kind
            reason = f"{self.index_name} not reachable ({type(err).__name__})"
            return [
                Check(name="index", ok=False, detail=reason),
                Check(name="index_lag", ok=False, detail="unknown: the index is not reachable"),
            ]
        checks = [Check(name="index", ok=True, detail=f"{self.index_name} reachable")]
        try:
            lag = self.journal.lag(applied)
        except Exception as err:
            detail = f"journal not reachable ({type(err).__name__})"
            return [*checks, Check(name="index_lag", ok=False, detail=detail)]
        ok = lag.seconds <= self.settings.max_lag_seconds
        detail = (
            f"{lag.documents} updates behind, oldest {lag.seconds:.1f} s "
            f"(threshold {self.settings.max_lag_seconds:g} s)"
        )
        return [*checks, Check(name="index_lag", ok=ok, detail=detail)]

    def _query(self, vector, top_k: int, metadata_filter):
        with self.sessions.get() as session:
            return session.query(vector, top_k, metadata_filter)

    def _open_session(self):
        stack = ExitStack()
        try:
            session = stack.enter_context(self.index.session())
        except BaseException:
            stack.close()
            raise
        return session, stack.close

    def _chunk_texts(self, hits: list[SearchHit], texts: dict[str, str]) -> list[str | None]:
        out: list[str | None] = []
        for hit in hits:
            text = texts.get(str(hit.source_key))
            if text is None:
                out.append(None)
                continue
            pieces = self.embedder.chunks(text)
            out.append(pieces[hit.chunk] if hit.chunk < len(pieces) else None)
        return out

    async def _blocking(self, action, *args):
        return await asyncio.get_running_loop().run_in_executor(self._db, action, *args)

    def close(self) -> None:
        self.batcher.close()
        self._db.shutdown(wait=False, cancel_futures=True)
        self.sessions.close()
        self.journal.close()


def _chunk_of(vector_id: str) -> int:
    tail = vector_id.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0
