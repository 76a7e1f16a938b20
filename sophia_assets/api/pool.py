"""A bounded pool of things that hold a connection (psycopg2 connections, index sessions),
opened on first need and reused; one that failed is closed and replaced."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Generic, TypeVar

T = TypeVar("T")
Opener = Callable[[], tuple[T, Callable[[], None]]]  # -> (thing, close)


class PoolTimeout(RuntimeError):
    """Every pooled connection stayed busy for the whole wait."""


class Pool(Generic[T]):
    def __init__(self, open_one: Opener, size: int, wait_s: float = 10.0):
        self._open = open_one
        self.size = size
        self.wait_s = wait_s
        self._idle: queue.LifoQueue[tuple[T, Callable[[], None]]] = queue.LifoQueue()
        self._opened = 0
        self._lock = threading.Lock()

    @contextmanager
    def get(self) -> Iterator[T]:
        item = self._take()
        try:
            yield item[0]
        except BaseException:
            self._discard(item)
            raise
        self._idle.put(item)

    def _take(self) -> tuple[T, Callable[[], None]]:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            grow = self._opened < self.size
            if grow:
                self._opened += 1
        if grow:
            try:
                return self._open()
            except BaseException:
                with self._lock:
                    self._opened -= 1
                raise
        try:
            return self._idle.get(timeout=self.wait_s)
        except queue.Empty:
            raise PoolTimeout(f"all {self.size} connections busy for {self.wait_s} s") from None

    def _discard(self, item: tuple[T, Callable[[], None]]) -> None:
        with self._lock:
            self._opened -= 1
        with suppress(Exception):
            item[1]()

    def close(self) -> None:
        while True:
            try:
                self._discard(self._idle.get_nowait())
            except queue.Empty:
                return
