"""`sophia bench search`; see sophia_assets/bench/search.py.

uv run python bench/search.py [--json]
"""

import sys

from sophia_assets.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "search", *sys.argv[1:]]))
