"""Start-up: the fetch command does not import what it needs only later (plots, the progress bar)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# matplotlib: only ``plot`` draws; tqdm: only a terminal gets a progress bar; alembic: only a
# database not at head is migrated; astropy: only FITS catalogs and TESS files need it. (h5py and
# the science package are still loaded: engine.pipeline imports the pool's job types at its top.)
LATER = ("matplotlib", "tqdm", "aretriever.plotting", "alembic", "astropy")


@pytest.mark.parametrize("module", ["aretriever.fetch", "aretriever.cli.main"])
def test_the_fetch_command_imports_no_plotting_or_progress_bar(module: str) -> None:
    code = f"import sys, {module}; print(' '.join(m for m in {LATER!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == []

