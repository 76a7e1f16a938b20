"""`sophia bench sensors`; see sophia_assets/bench/sensors.py.

uv run python bench/sensors.py [--json]
"""

import sys

from sophia_assets.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "sensors", *sys.argv[1:]]))
