"""`sophia`: the platform from a terminal.

The parser built here is the one statement of the command line: `sophia --help` prints it and
docs/cli.md is generated from it (`reference.py`). Each verb group lives in its own module,
which adds its verbs to the parser and holds their handlers. Handlers import Dagster, torch
and the like themselves, so `sophia --help` starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import os
import sys

from sophia_assets.cli import api, catalog, db, demo, flow, images, postgres, search

# In the order `sophia --help` lists them.
GROUPS = (demo, postgres, flow, search, api, catalog, db, images)


def parser() -> argparse.ArgumentParser:
    """The whole command line: every group's verbs, flags and help texts."""
    root = argparse.ArgumentParser(prog="sophia", description="The sophia AI data platform.")
    verbs = root.add_subparsers(title="commands")
    for group in GROUPS:
        group.add_verbs(verbs)
    return root


def main(argv: list[str] | None = None) -> int:
    root = parser()
    args = root.parse_args(argv)
    if not hasattr(args, "handler"):  # a group without its verb, or nothing at all
        root.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
