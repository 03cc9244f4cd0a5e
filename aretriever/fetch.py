"""``python -m aretriever.fetch``: backfill a catalog (the code is in :mod:`aretriever.cli.fetch`)."""

from __future__ import annotations

from aretriever.cli.exits import leave
from aretriever.cli.fetch import main

__all__ = ["main"]

if __name__ == "__main__":
    leave(main())
