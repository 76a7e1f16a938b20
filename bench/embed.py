"""`sophia bench embed`; see sophia_assets/bench/embed.py.

uv run python bench/embed.py [--json]
"""

import sys

from sophia_assets.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "embed", *sys.argv[1:]]))
