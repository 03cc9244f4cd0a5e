"""``python -m aretriever.cli``: the ``aretriever`` command."""

from __future__ import annotations

from aretriever.cli.exits import leave
from aretriever.cli.main import main

leave(main())
