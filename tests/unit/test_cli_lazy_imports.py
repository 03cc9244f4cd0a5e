"""Start-up: the fetch command does not import what it needs only later (plots, the progress bar)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# matplotlib: only ``plot`` draws; tqdm: only a terminal gets a progress bar.
LATER = ("matplotlib", "tqdm", "aretriever.plotting")


@pytest.mark.parametrize("module", ["aretriever.fetch", "aretriever.cli.main"])
def test_the_fetch_command_imports_no_plotting_or_progress_bar(module: str) -> None:
    code = f"import sys, {module}; print(' '.join(m for m in {LATER!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == []

