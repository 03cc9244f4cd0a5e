"""``python -m aretriever.populate``: rows from raw files (the code is in :mod:`aretriever.cli.populate`)."""

from __future__ import annotations

import sys

from aretriever.cli.populate import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
