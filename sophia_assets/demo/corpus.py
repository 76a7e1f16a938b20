"""The demo corpus: real English prose that ships with Python and with installed packages.

Documents are the docstrings (modules, classes, functions) of the standard library and of
`sympy` and `networkx` (both installed with torch), read with `ast` so nothing is imported or
executed. The order is fixed by the interpreter and package versions (uv.lock pins them), so
the same versions always give the same documents under the same ids. Parsing takes seconds,
so the result is cached under SOPHIA_HOME.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import importlib.metadata
import importlib.util
import json
import random
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

CORPUS_FORMAT = 1
PACKAGES = ("sympy", "networkx")
MIN_CHARS = 80
# Folders of test code, whose docstrings are mostly fixtures rather than prose.
SKIPPED_PARTS = frozenset({"test", "tests", "testing", "site-packages", "__pycache__"})
SHUFFLE_SEED = 20261124


@dataclass(frozen=True)
class CorpusDocument:
    title: str
    body: str


def load_corpus(cache_dir: Path) -> list[CorpusDocument]:
    """All corpus documents in their fixed order, from the cache when it is current."""
    cache = cache_dir / f"corpus-{_corpus_fingerprint()}.json.gz"
    if cache.exists():
        with gzip.open(cache, "rt", encoding="utf-8") as handle:
            return [CorpusDocument(title, body) for title, body in json.load(handle)]
    documents = _build_corpus()
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial")
    with gzip.open(partial, "wt", encoding="utf-8") as handle:
        json.dump([[d.title, d.body] for d in documents], handle)
    partial.replace(cache)
    return documents


def _corpus_fingerprint() -> str:
    versions = [sys.version, str(CORPUS_FORMAT)]
    versions += [f"{name}=={importlib.metadata.version(name)}" for name in PACKAGES]
    return hashlib.sha256("\n".join(versions).encode()).hexdigest()[:16]


def _build_corpus() -> list[CorpusDocument]:
    roots = [("", Path(sysconfig.get_paths()["stdlib"]))]
    for name in PACKAGES:
        roots.append((name, Path(importlib.util.find_spec(name).origin).parent))
    seen: dict[str, str] = {}
    for prefix, root in roots:
        for path in sorted(root.rglob("*.py")):
            relative = path.relative_to(root)
            if SKIPPED_PARTS.intersection(relative.parts):
                continue
            module = ".".join(filter(None, [prefix, *relative.with_suffix("").parts]))
            for title, body in _docstrings(path, module.removesuffix(".__init__")):
                seen.setdefault(body, title)
    documents = [CorpusDocument(title, body) for body, title in seen.items()]
    random.Random(SHUFFLE_SEED).shuffle(documents)
    return documents


def _docstrings(path: Path, module: str) -> list[tuple[str, str]]:
    """(qualified name, docstring) for the module and every class and function in it."""
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError):
        return []
    found: list[tuple[str, str]] = []

    def visit(node: ast.AST, name: str) -> None:
        text = ast.get_docstring(node)  # type: ignore[arg-type]
        if text and len(text.strip()) >= MIN_CHARS:
            found.append((name, text.strip()))
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, f"{name}.{child.name}")

    visit(tree, module)
    return found


def demo_corpus(home: Path) -> list[CorpusDocument]:
    """The corpus cached under `home`/cache, saying on stderr when it is built (once)."""
    import sys

    cache = home / "cache"
    if not any(cache.glob("corpus-*.json.gz")):
        print("building the demo corpus from installed docstrings (once)...", file=sys.stderr)
    return load_corpus(cache)
