"""``python -m aretriever.cli``: the ``aretriever`` command."""

from __future__ import annotations

import sys

from aretriever.cli.main import main

sys.exit(main())
