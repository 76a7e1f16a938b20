"""`.dockerignore` as the Docker client reads it: patterns in order, `!` re-includes, the last
match wins, and a pattern that matches a folder matches everything below it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class _Pattern:
    text: str
    regex: re.Pattern[str]
    include: bool  # a `!` exception


class DockerIgnore:
    def __init__(self, lines: list[str]) -> None:
        self._patterns = [p for p in (_parse(line) for line in lines) if p is not None]

    @classmethod
    def for_context(cls, context: Path) -> DockerIgnore:
        path = context / ".dockerignore"
        return cls(path.read_text().splitlines() if path.exists() else [])

    def excludes(self, relative: str) -> bool:
        """Whether the context path (slash-separated, relative) stays out of the context."""
        parts = relative.split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for pattern in self._patterns:
            if any(pattern.regex.fullmatch(candidate) for candidate in candidates):
                excluded = not pattern.include
        return excluded

    def prunes(self, folder: str) -> bool:
        """Whether nothing below the excluded folder can be re-included by a later exception
        (the walk may skip it: `.venv` and `.sophia` hold hundreds of thousands of files)."""
        if not self.excludes(folder):
            return False
        return not any(
            p.include and (p.text.startswith(folder + "/") or p.text[:1] in "*?[")
            for p in self._patterns
        )


def _parse(line: str) -> _Pattern | None:
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    include = line.startswith("!")
    pattern = line[1:].strip() if include else line
    pattern = re.sub(r"/+", "/", pattern).strip("/")
    while pattern.startswith("./"):
        pattern = pattern[2:]
    return _Pattern(pattern, re.compile(_to_regex(pattern or ".")), include)


def _to_regex(pattern: str) -> str:
    """Go's filepath.Match syntax plus Docker's `**` (any number of folders)."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end]
                out.append("[" + ("^" + body[1:] if body.startswith("^") else body) + "]")
                i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)
