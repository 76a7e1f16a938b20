"""How much a capture holds in memory at once: a batch handed to the journal writer, a
backfill chunk, and the part of a source transaction not yet journaled are each bounded by
documents and by bytes, so a 1,000,000-row transaction or a table of megabyte rows is
captured in bounded memory (`SOPHIA_FLOW_BATCH_DOCUMENTS`, `SOPHIA_FLOW_BATCH_MB`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_DOCUMENTS = 20_000
DEFAULT_MB = 64


@dataclass(frozen=True)
class BatchLimits:
    documents: int = DEFAULT_DOCUMENTS
    bytes: int = DEFAULT_MB * 1024 * 1024

    def full(self, documents: int, size: int) -> bool:
        return documents >= self.documents or size >= self.bytes

    @classmethod
    def from_env(cls) -> BatchLimits:
        return cls(
            documents=_positive("SOPHIA_FLOW_BATCH_DOCUMENTS", DEFAULT_DOCUMENTS),
            bytes=_positive("SOPHIA_FLOW_BATCH_MB", DEFAULT_MB) * 1024 * 1024,
        )


def _positive(name: str, default: int) -> int:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name}={text!r} is not a positive whole number; unset it for {default}")
    return value
