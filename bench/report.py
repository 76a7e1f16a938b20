"""How a benchmark talks: progress to stderr as it goes, figures to stdout, and with `--json`
the figures as one JSON object on the last line (what tests and scripts read)."""

import argparse
import sys


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="figures as JSON on the last line")
