"""Reads `flow_specs/`: catalog files and their imports, schemas and connector configs.

Every problem is collected rather than raised, so one run reports all of them; the rules
(`rules.py`) then check what the files mean.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from sophia_assets.catalog.errors import CatalogIssue
from sophia_assets.catalog.model import (
    Capture,
    CaptureBinding,
    Collection,
    Connector,
    Derivation,
    Materialization,
    MaterializationBinding,
    Transform,
)
from sophia_assets.catalog.structure import structure_issues

CATALOG_SUFFIXES = (".flow.yaml", ".flow.yml", ".flow.json")
SECTIONS = ("captures", "collections", "materializations")


@dataclass
class LoadedFiles:
    files: list[Path] = field(default_factory=list)
    captures: dict[str, Capture] = field(default_factory=dict)
    collections: dict[str, Collection] = field(default_factory=dict)
    materializations: dict[str, Materialization] = field(default_factory=dict)
    issues: list[CatalogIssue] = field(default_factory=list)
    # Names defined, but too broken to load; references to them are not reported again.
    broken: set[str] = field(default_factory=set)


def entry_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.name.endswith(CATALOG_SUFFIXES))


def load_files(root: Path) -> LoadedFiles:
    loaded = LoadedFiles()
    entries = entry_files(root) if root.is_dir() else []
    if not entries:
        loaded.issues.append(
            CatalogIssue(
                root,
                (),
                f"no catalog files ({', '.join('*' + s for s in CATALOG_SUFFIXES)}) "
                "found; add one or point SOPHIA_FLOW_SPECS at the folder that has them",
            )
        )
    pending = [entry.resolve() for entry in entries]
    while pending:
        file = pending.pop(0)
        if file in loaded.files:
            continue
        loaded.files.append(file)
        pending.extend(_load_file(file, loaded))
    return loaded


def _load_file(file: Path, loaded: LoadedFiles) -> list[Path]:
    """Adds the file's definitions to `loaded`; returns the files it imports."""
    document, problem = _read_document(file)
    if problem:
        loaded.issues.append(CatalogIssue(file, (), problem))
        return []
    shape = structure_issues(document, file)
    loaded.issues.extend(shape)
    broken = {issue.path[:2] for issue in shape}
    imports = []
    for index, target in enumerate(document.get("import") or []):
        if not isinstance(target, str):
            continue
        imported = (file.parent / target).resolve()
        if imported.is_file():
            imports.append(imported)
        else:
            loaded.issues.append(
                CatalogIssue(
                    file,
                    ("import", index),
                    f"imported file {target!r} does not exist (looked for {imported}); "
                    "fix the path or remove the import",
                )
            )
    for section in SECTIONS:
        definitions = document.get(section)
        if not isinstance(definitions, dict):
            continue
        for name, spec in definitions.items():
            if any(path == (section, name)[: len(path)] for path in broken):
                loaded.broken.add(name)  # its shape is wrong; already reported
                continue
            _add_definition(file, section, name, spec, loaded)
    return imports


def _read_document(file: Path) -> tuple[dict[str, Any], str | None]:
    try:
        document = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        return {}, f"not valid YAML: {err}".replace("\n", " ")
    if not isinstance(document, dict):
        return {}, "a catalog file must hold a mapping of captures, collections, materializations"
    return document, None


def _add_definition(
    file: Path, section: str, name: str, spec: dict[str, Any], loaded: LoadedFiles
) -> None:
    for other in SECTIONS:
        existing = getattr(loaded, other).get(name)
        if existing is not None:
            loaded.issues.append(
                CatalogIssue(
                    file,
                    (section, name),
                    f"{name!r} is already defined as a {other[:-1]} in {existing.file}; "
                    "catalog names must be unique: rename one of them",
                )
            )
            return
    path = (section, name)
    if section == "captures":
        connector = _connector(file, (*path, "endpoint"), spec["endpoint"], loaded)
        bindings = tuple(CaptureBinding(b["resource"], b["target"]) for b in spec["bindings"])
        loaded.captures[name] = Capture(name, file, connector, bindings)
    elif section == "materializations":
        connector = _connector(file, (*path, "endpoint"), spec["endpoint"], loaded)
        bindings = tuple(
            MaterializationBinding(_source_name(b["source"]), b["resource"])
            for b in spec["bindings"]
        )
        loaded.materializations[name] = Materialization(name, file, connector, bindings)
    else:
        collection = _collection(file, name, spec, loaded)
        if collection is None:
            loaded.broken.add(name)
        else:
            loaded.collections[name] = collection


def _collection(
    file: Path, name: str, spec: dict[str, Any], loaded: LoadedFiles
) -> Collection | None:
    path = ("collections", name)
    if "schema" in spec:
        schema_key = "schema"
    elif "writeSchema" in spec and "readSchema" in spec:
        schema_key = "writeSchema"
    else:
        loaded.issues.append(
            CatalogIssue(
                file, path, "a collection needs `schema`, or both `writeSchema` and `readSchema`"
            )
        )
        return None
    schema = _schema(file, (*path, schema_key), spec[schema_key], loaded)
    read_schema = None
    if "readSchema" in spec and schema_key != "schema":
        read_schema = _schema(file, (*path, "readSchema"), spec["readSchema"], loaded)
    if schema is None:
        return None
    derivation = None
    if "derive" in spec:
        derivation = Derivation(
            using=spec["derive"]["using"],
            transforms=tuple(
                Transform(t["name"], _source_name(t["source"]))
                for t in spec["derive"]["transforms"]
            ),
        )
    return Collection(name, file, tuple(spec["key"]), schema, read_schema, derivation)


def _schema(file: Path, path: tuple, value: Any, loaded: LoadedFiles) -> dict[str, Any] | None:
    """An inline schema, or one read from a file relative to the catalog file (optionally
    `file.yaml#/$defs/name`); checked against its JSON Schema metaschema."""
    where = "inline"
    if isinstance(value, str):
        written = value
        reference, _, fragment = value.partition("#")
        schema_file = (file.parent / reference).resolve()
        where = reference
        document, problem = _read_any(schema_file)
        if problem:
            loaded.issues.append(CatalogIssue(file, path, f"schema {written!r}: {problem}"))
            return None
        value = _pointer(document, fragment) if fragment else document
        if value is None:
            loaded.issues.append(
                CatalogIssue(
                    file,
                    path,
                    f"schema {written!r}: #{fragment} is not in {reference}; fix the fragment",
                )
            )
            return None
    if isinstance(value, bool):
        value = {} if value else {"not": {}}
    try:
        validator_for(value).check_schema(value)
    except SchemaError as err:
        at = "/".join(str(part) for part in err.absolute_path) or "(root)"
        loaded.issues.append(
            CatalogIssue(
                file, path, f"invalid JSON Schema ({where}, at {at}): {err.message}; fix the schema"
            )
        )
        return None
    return value


def _connector(file: Path, path: tuple, endpoint: dict[str, Any], loaded: LoadedFiles) -> Connector:
    spec = endpoint["connector"]
    config = spec["config"]
    if isinstance(config, str):
        config_file = (file.parent / config).resolve()
        document, problem = _read_any(config_file)
        if problem:
            loaded.issues.append(
                CatalogIssue(
                    file, (*path, "connector", "config"), f"connector config {config!r}: {problem}"
                )
            )
            document = {}
        config = document
    return Connector(spec["image"], config)


def _read_any(file: Path) -> tuple[Any, str | None]:
    if not file.is_file():
        return None, f"file {file} does not exist; fix the path or create it"
    try:
        text = file.read_text()
        return (json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)), None
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        return None, f"{file.name} cannot be parsed: {err}".replace("\n", " ")


def _pointer(document: Any, pointer: str) -> Any:
    for token in pointer.strip("/").split("/") if pointer.strip("/") else []:
        token = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(document, dict) or token not in document:
            return None
        document = document[token]
    return document


def _source_name(source: str | dict[str, Any]) -> str:
    return source if isinstance(source, str) else source["name"]
