"""``python -m aretriever.daemon``: the daemon (the code is in :mod:`aretriever.service.daemon`)."""

from __future__ import annotations

import sys

from aretriever.service.daemon import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
