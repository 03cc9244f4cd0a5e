"""``python -m aretriever.plot``: plot a source's lightcurves (the code is in :mod:`aretriever.cli.plot`)."""

from __future__ import annotations

import sys

from aretriever.cli.plot import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
