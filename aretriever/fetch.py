"""``python -m aretriever.fetch``: backfill a catalog (the code is in :mod:`aretriever.cli.fetch`)."""

from __future__ import annotations

import sys

from aretriever.cli.fetch import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
