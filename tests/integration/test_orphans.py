"""No orphans: when the process that owns the pool is SIGKILLed, its pool workers exit too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DEADLINE_S = 30.0  # generous: the workers notice at once (pidfd), this only bounds a broken run


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces and ")"
    return fields[0], int(fields[1])


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (children, grandchildren...)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _proc_stat(int(entry))) is not None:
            parents[int(entry)] = stat[1]
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def parent(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def wait_until_gone(pids: set[int]) -> set[int]:
    """The pids still alive after at most DEADLINE_S (polling; returns as soon as none is)."""
    deadline = time.monotonic() + DEADLINE_S
    while (left := {p for p in pids if alive(p)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


SCRIPT = textwrap.dedent(
    """
    import sys, time
    from aretriever.engine.pool import default_executor

    pool = default_executor(2)
    # two jobs at once make the pool start both workers; their answers prove the workers run
    first = [pool.submit(time.sleep, 0.5), pool.submit(time.sleep, 0.5)]
    [f.result() for f in first]
    busy = [pool.submit(time.sleep, 3600) for _ in range(2)]  # killed mid-job
    print("ready", flush=True)
    time.sleep(3600)
    """
)


def test_pool_workers_exit_when_their_owner_is_sigkilled(tmp_path: Path) -> None:
    with subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True, cwd=tmp_path) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            children = descendants(proc.pid)
            workers = {pid for pid in children if parent(pid) not in (proc.pid, None)}
            assert len(workers) >= 2, children  # the fork server's children: the pool's workers
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    assert wait_until_gone(children) == set()


def test_fetch_cli_sigkilled_mid_run_leaves_no_process_behind(archive, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "data"
    argv = [
        sys.executable, "-m", "aretriever.fetch", "--quiet", "--catalog", "test",
        "--data-root", str(root), "--db-url", f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        "--set", f"observatories.ztf.base_url={archive.url}",
        "--set", "observatories.ztf.rate_per_s=1000",
        "--set", "catalog.test_size=300",
        "--set", "engine.workers=2",
    ]  # fmt: skip
    with (tmp_path / "cli.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        # the pool works once reduced files appear; wait for a few (the run takes far longer)
        while len(list(root.glob("DEFAULT/RA*/[!.]*.h5"))) < 3:
            assert proc.poll() is None, (tmp_path / "cli.log").read_text()
            time.sleep(0.05)
        children = descendants(proc.pid)
        assert any(parent(pid) not in (proc.pid, None) for pid in children), children  # workers
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert wait_until_gone(children) == set()
