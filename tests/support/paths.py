"""Where the repository and its vendored contracts are."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The vendors' published OpenAPI documents, vendored with their source and version noted in
# tests/contracts/README.md.
CONTRACTS = REPO / "tests" / "contracts"
