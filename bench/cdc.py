"""Capture throughput against `pg_recvlogical` (the floor) and latency at a steady rate.
The same as `sophia bench cdc`; see sophia_assets/bench/cdc.py.

    uv run python bench/cdc.py [--rows 100000] [--rate 1000] [--seconds 10] [--json]
"""

import sys

from sophia_assets.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "cdc", *sys.argv[1:]]))
