"""Retry with exponential backoff: the one rule every client here uses (Pinecone, Lambda Cloud,
the capture's reconnects): the first delay, doubling up to a cap, reset after a success."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Backoff:
    def __init__(self, first_s: float, max_s: float):
        self.first_s = first_s
        self.max_s = max_s
        self._next = first_s

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the following one."""
        delay = self._next
        self._next = min(delay * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self._next = self.first_s


def retry(
    call: Callable[[], T],
    retryable: Callable[[Exception], bool],
    retries: int,
    backoff: Backoff,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`call()`, retried up to `retries` times while it raises a retryable error; any other
    error, or the last one, is raised."""
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as err:
            if attempt == retries or not retryable(err):
                raise
        sleep(backoff.next_delay())
    raise AssertionError("unreachable")
