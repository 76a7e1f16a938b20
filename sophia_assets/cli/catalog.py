"""`sophia catalog`: the flow_specs catalog."""

from __future__ import annotations

import argparse
import sys


def add_verbs(verbs: argparse._SubParsersAction) -> None:
    group = verbs.add_parser(
        "catalog",
        help="the flow_specs catalog",
        description="The catalog of captures, collections and materializations in "
        "flow_specs/ (SOPHIA_FLOW_SPECS).",
    )
    catalog_verbs = group.add_subparsers(title="catalog commands")
    catalog_verbs.add_parser(
        "validate", help="validate flow_specs/ and print the lineage"
    ).set_defaults(handler=validate)


def validate(args: argparse.Namespace) -> int:
    from sophia_assets.catalog import CatalogError, load_catalog
    from sophia_assets.catalog.translator import FlowTranslator
    from sophia_assets.home import flow_specs_dir

    try:
        catalog = load_catalog(flow_specs_dir())
    except CatalogError as err:
        print(err, file=sys.stderr)
        return 1
    print(
        f"{catalog.root}: {len(catalog.files)} files, {len(catalog.captures)} captures, "
        f"{len(catalog.collections)} collections, "
        f"{len(catalog.materializations)} materializations"
    )
    for spec in FlowTranslator(catalog).build_specs():
        for dep in spec.deps:
            print(f"  {dep.asset_key.to_user_string()} -> {spec.key.to_user_string()}")
    return 0
