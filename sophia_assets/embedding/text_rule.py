"""The embedding derivation's text rule: which fields of a source document are embedded, how
they are joined, and the content hash that tells whether a document needs embedding again.
The derivation and the coverage check both use it, so they cannot disagree."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sophia_assets.catalog.model import Derivation

DEFAULT_FIELDS = ("title", "body")


@dataclass(frozen=True)
class TextRule:
    fields: tuple[str, ...] = DEFAULT_FIELDS

    @classmethod
    def of(cls, derivation: Derivation) -> TextRule:
        """The rule the derivation's connector config names (`textFields`)."""
        config = derivation.connector.config if derivation.connector else {}
        return cls(tuple(config.get("textFields") or DEFAULT_FIELDS))

    def text(self, document: dict[str, Any]) -> str:
        """The non-empty text fields, in order, separated by a blank line."""
        return "\n\n".join(str(document[f]) for f in self.fields if document.get(f))

    @staticmethod
    def content_hash(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()
