"""How long a fresh process takes to load the code location, against `import dagster` alone
(the floor every run pays). Every Dagster run process pays this.

    uv run python bench/location_load.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def _seconds(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cases = {
        "python (empty)": "pass",
        "import dagster": "import dagster",
        "load sophia_assets.definitions": "import sophia_assets.definitions",
    }
    medians = {}
    for name, code in cases.items():
        samples = [_seconds(code) for _ in range(args.repeat)]
        medians[name] = statistics.median(samples)
        print(
            f"{name:34s} median {medians[name]:.2f} s  (min {min(samples):.2f}, "
            f"max {max(samples):.2f}, n={args.repeat})"
        )
    ratio = medians["load sophia_assets.definitions"] / medians["import dagster"]
    print(f"code location / import dagster: {ratio:.2f}x")


if __name__ == "__main__":
    main()
