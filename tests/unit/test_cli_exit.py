"""The commands end their process without the interpreter's final walk over every imported object."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# atexit handlers run after ``leave`` froze the objects: they still run, and see the freeze
REPORT = "import atexit, gc; atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"


def test_leave_freezes_the_objects_and_exits_with_the_code() -> None:
    code = REPORT + "from aretriever.cli.exits import leave\nleave(3)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout.split()) == (3, ["frozen", "True"])


def test_python_m_aretriever_fetch_leaves_through_leave(tmp_path: Path) -> None:
    argv = ["aretriever.fetch", "--dry-run", "--quiet", "--no-config", "--catalog", "test",
            "--set", "catalog.test_size=2", "--data-root", str(tmp_path / "data")]  # fmt: skip
    code = REPORT + textwrap.dedent(
        f"""
        import runpy, sys
        sys.argv = {argv!r}
        runpy.run_module("aretriever.fetch", run_name="__main__", alter_sys=True)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["frozen", "True"]
