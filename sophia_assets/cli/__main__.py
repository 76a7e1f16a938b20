"""`python -m sophia_assets.cli`, the same as `sophia`."""

import sys

from sophia_assets.cli import main

sys.exit(main())
