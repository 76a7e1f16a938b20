"""Micro-batching of query embeddings: requests that arrive while the model is busy are
embedded together in its next call, so a burst costs one forward pass instead of many.

No timer: a lone request is embedded at once, so batching adds no latency at low load. The
model runs on `workers` threads, off the event loop; more than one suits only a model that
may be called from several threads at once (the ONNX backend: an ONNX Runtime session and a
tokenizer whose settings never change)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class EmbeddingBatcher:
    def __init__(
        self,
        embed: Callable[[list[str]], list[list[float]]],
        max_batch: int = 32,
        workers: int = 1,
    ):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1 (1: no batching)")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._embed = embed
        self.max_batch = max_batch
        self.workers = workers
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="sophia-embed")
        self._pending: list[tuple[str, asyncio.Future]] = []
        self._draining = 0  # drain loops running, at most one per worker
        self.calls = 0  # model calls made (a test and the benchmark read it)

    async def embed(self, text: str) -> list[float]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((text, future))
        if self._draining < self.workers:
            self._draining += 1
            loop.create_task(self._drain())
        return await future

    async def on_model_thread(self, action: Callable[..., T], *args: Any) -> T:
        """Runs `action` on one of the model's threads."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, action, *args)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                try:
                    vectors = await self.on_model_thread(self._embed, [t for t, _ in batch])
                    self.calls += 1
                except Exception as err:  # every waiter gets the failure, the loop goes on
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(err)
                    continue
                for (_, future), vector in zip(batch, vectors, strict=True):
                    if not future.done():
                        future.set_result(vector)
        finally:
            self._draining -= 1

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
