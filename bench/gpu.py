"""`sophia bench gpu`; see sophia_assets/bench/gpu.py.

uv run python bench/gpu.py [--documents N] [--device auto|cpu|cuda:N] [--json]
"""

import sys

from sophia_assets.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "gpu", *sys.argv[1:]]))
