"""A Dockerfile read into stages: base images, users, variables and the context paths it uses."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from dockerfile_parse import DockerfileParser


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int  # 1-based, as editors and hadolint count

    def words(self) -> list[str]:
        """The arguments, from the JSON (exec) form or the shell form."""
        if self.value.lstrip().startswith("["):
            try:
                return [str(word) for word in json.loads(self.value)]
            except ValueError:
                pass
        return shlex.split(self.value, posix=True)

    def flags(self) -> dict[str, str]:
        return dict(
            word[2:].split("=", 1) if "=" in word else (word[2:], "")
            for word in self.words()
            if word.startswith("--")
        )


@dataclass
class Stage:
    index: int
    base: str  # the image or earlier stage it starts FROM
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.name or f"stage {self.index}"


@dataclass
class Dockerfile:
    path: Path
    stages: list[Stage]

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        parser = DockerfileParser(path=str(path))
        stages: list[Stage] = []
        for item in parser.structure:
            keyword = item["instruction"].upper()
            instruction = Instruction(keyword, item["value"], item["startline"] + 1)
            if keyword == "FROM":
                words = [w for w in instruction.words() if not w.startswith("--")]
                name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
                stages.append(Stage(len(stages), words[0], name, instruction.line))
            elif keyword != "COMMENT" and stages:
                stages[-1].instructions.append(instruction)
        return cls(Path(path), stages)

    def stage(self, target: str | None) -> Stage:
        """The stage `docker build --target` builds (the last one without a target)."""
        if target is None:
            return self.stages[-1]
        for stage in self.stages:
            if stage.name == target:
                return stage
        names = ", ".join(s.name for s in self.stages if s.name) or "none"
        raise ValueError(f"{self.path.name}: no stage named {target!r}; stages: {names}")

    def parent(self, stage: Stage) -> Stage | None:
        """The earlier stage a stage starts FROM, when it starts from one."""
        return next((s for s in self.stages[: stage.index] if s.name == stage.base), None)

    def is_stage(self, reference: str, before: int) -> bool:
        return any(s.name == reference or str(s.index) == reference for s in self.stages[:before])

    def user(self, stage: Stage) -> tuple[str, int | None]:
        """The user the stage's processes run as, inherited from a parent stage; root when no
        USER says otherwise. Returns the user and the line that set it."""
        own = [i for i in stage.instructions if i.keyword == "USER"]
        if own:
            return own[-1].value.strip(), own[-1].line
        parent = self.parent(stage)
        return self.user(parent) if parent else ("root", None)

    def context_sources(self) -> list[str]:
        """Context paths that COPY/ADD (without --from) and RUN bind mounts read."""
        sources: list[str] = []
        for stage in self.stages:
            for instruction in stage.instructions:
                if instruction.keyword in ("COPY", "ADD") and "from" not in instruction.flags():
                    words = [w for w in instruction.words() if not w.startswith("--")]
                    sources.extend(words[:-1])
                elif instruction.keyword == "RUN":
                    sources.extend(_bind_sources(instruction))
        return [_normalise(s) for s in sources]


def _bind_sources(instruction: Instruction) -> list[str]:
    sources = []
    for word in instruction.words():
        if not word.startswith("--mount="):
            continue
        options = dict(part.split("=", 1) for part in word[8:].split(",") if "=" in part)
        if options.get("type", "bind") == "bind" and "from" not in options:
            sources.append(options.get("source", options.get("src", ".")))
    return sources


def _normalise(source: str) -> str:
    source = source.strip().lstrip("/")
    while source.startswith("./"):
        source = source[2:]
    return source.rstrip("/") or "."
