"""Setting up and rotating the capture's login for every capture of the catalog that runs on
the platform's Postgres: what `sophia db roles`, `sophia db rotate` and the rotation job do."""

from __future__ import annotations

from dataclasses import dataclass

from sophia_assets.catalog.model import Catalog
from sophia_assets.flow.bindings import capture_bindings, capture_settings
from sophia_assets.flow.runtime import runnable_captures, source_url
from sophia_assets.secrets.postgres_roles import (
    SECRET,
    Rotation,
    rotate,
    setup_capture_roles,
)
from sophia_assets.secrets.store import SecretStore


@dataclass(frozen=True)
class RoleSetup:
    tables: list[str]
    rotation: Rotation | None  # the first rotation, when there was no login yet


def platform_tables(catalog: Catalog, admin_url: str) -> list[tuple[str, list[str], str, str]]:
    """Per capture on the platform's server: (name, published tables, watermarks, publication)."""
    out = []
    for capture in runnable_captures(catalog):
        if source_url(capture, admin_url) != admin_url:
            continue  # a production source: its DBA grants, as Estuary's setup guide says
        settings = capture_settings(capture)
        tables = [b.id for b in capture_bindings(capture, catalog)]
        out.append((capture.name, tables, settings.watermarks_table, settings.publication))
    return out


def set_up(catalog: Catalog, admin_url: str, store: SecretStore) -> RoleSetup:
    published: list[str] = []
    for _, tables, watermarks, publication in platform_tables(catalog, admin_url):
        setup_capture_roles(admin_url, tables, watermarks, publication)
        published += tables
    rotation = None if store.read(SECRET) else rotate(admin_url, store)
    return RoleSetup(published, rotation)
