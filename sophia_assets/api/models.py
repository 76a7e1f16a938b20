"""The API's typed requests and answers; FastAPI generates the OpenAPI document from them."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_TEXT_CHARS = 2_000  # longer text answers 413: a query, not a document
MAX_TOP_K = 100
# Metadata the index stores with each vector (the derivation writes them); a filter may test
# any of them for equality.
FILTER_FIELDS = ("source_key", "title", "chunk", "content_hash", "model")


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=MAX_TEXT_CHARS, description="What to look for.")
    top_k: int = Field(default=10, ge=1, le=MAX_TOP_K, description="How many documents.")
    filter: dict[str, Any] | None = Field(
        default=None,
        description=f"Metadata equality, on any of: {', '.join(FILTER_FIELDS)}.",
        examples=[{"source_key": 42}],
    )
    include_text: bool = Field(default=False, description="Return each result's chunk text.")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("must contain a non-whitespace character")
        _unicode(text)
        return text

    @field_validator("filter")
    @classmethod
    def _known_fields(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        unknown = sorted(set(value or {}) - set(FILTER_FIELDS))
        if unknown:
            raise ValueError(
                f"unknown filter field {unknown[0]!r}; the index stores {', '.join(FILTER_FIELDS)}"
            )
        for field, condition in (value or {}).items():
            if not _scalar(condition):
                raise ValueError(
                    f"filter field {field!r}: must equal one string, number (64-bit integer or "
                    "finite) or boolean"
                )
            if isinstance(condition, str):
                _unicode(condition)
        return value or None


def _scalar(value: Any) -> bool:
    if isinstance(value, bool | str):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, float) and math.isfinite(value)


def _unicode(text: str) -> None:
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None


class SearchHit(BaseModel):
    id: str = Field(description="The vector's id: source key and chunk number.")
    score: float
    title: str
    chunk: int
    source_key: Any
    text: str | None = None


class SearchResponse(BaseModel):
    results: list[SearchHit]
    model: str
    index: str
    took_ms: float


class DocumentResponse(BaseModel):
    source_key: Any
    collection: str
    document: dict[str, Any]
    journal_offset: int
    vector_ids: list[str]


class Check(BaseModel):
    name: str
    ok: bool
    detail: str


class Readiness(BaseModel):
    ready: bool
    checks: list[Check]


class Health(BaseModel):
    status: str = "ok"


class FieldError(BaseModel):
    field: str
    rule: str


class ErrorResponse(BaseModel):
    error: str
    fields: list[FieldError] = []
