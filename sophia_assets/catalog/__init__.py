"""`flow_specs/`, Estuary's catalog format, parsed and validated into a typed catalog."""

from __future__ import annotations

from pathlib import Path

from sophia_assets.catalog.errors import CatalogError, CatalogIssue
from sophia_assets.catalog.loader import load_files
from sophia_assets.catalog.model import Catalog
from sophia_assets.catalog.rules import rule_issues

__all__ = ["Catalog", "CatalogError", "CatalogIssue", "load_catalog"]


def load_catalog(root: Path) -> Catalog:
    """The catalog under `root`, or a CatalogError listing every problem found in it."""
    root = Path(root).resolve()
    loaded = load_files(root)
    issues = loaded.issues + rule_issues(loaded)
    if issues:
        raise CatalogError(issues, relative_to=root.parent)
    return Catalog(
        root=root,
        files=tuple(loaded.files),
        captures=loaded.captures,
        collections=loaded.collections,
        materializations=loaded.materializations,
    )
