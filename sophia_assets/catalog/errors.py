"""Catalog problems, each naming the file, the place inside it and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PathSegment = str | int


def format_path(path: tuple[PathSegment, ...]) -> str:
    """`("collections", "sophia/x", "key", 0)` -> `collections.sophia/x.key[0]`."""
    text = ""
    for segment in path:
        if isinstance(segment, int):
            text += f"[{segment}]"
        else:
            text += f".{segment}" if text else segment
    return text or "(top level)"


@dataclass(frozen=True)
class CatalogIssue:
    file: Path
    path: tuple[PathSegment, ...]
    message: str

    def render(self, relative_to: Path | None = None) -> str:
        file = self.file
        if relative_to is not None and file.is_relative_to(relative_to):
            file = file.relative_to(relative_to)
        return f"{file}: {format_path(self.path)}: {self.message}"


class CatalogError(ValueError):
    """Every problem found in a catalog, reported together before anything runs."""

    def __init__(self, issues: list[CatalogIssue], relative_to: Path | None = None):
        self.issues = issues
        lines = [issue.render(relative_to) for issue in issues]
        count = f"{len(issues)} problem{'s' if len(issues) != 1 else ''}"
        super().__init__(f"flow catalog has {count}:\n" + "\n".join(f"  {line}" for line in lines))
