"""Several processes on one DATA_ROOT: a start sweeps only what dead owners left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from aretriever.config import load_config
from aretriever.engine.core import Engine
from aretriever.store import hdf5, owners, paths

# a second process that owns scratch and temporary files under DATA_ROOT; "hold" keeps running,
# "die" is SIGKILLed by itself while holding everything (as a killed CLI would be)
OWNER = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from aretriever.store import hdf5, owners, paths

    root, mode = Path(sys.argv[1]), sys.argv[2]
    with owners.holding(root) as token:
        scratch = paths.scratch_dir(root, "ztf", token)
        scratch.mkdir(parents=True)
        (scratch / "half.fits").write_bytes(b"x")
        made = [scratch]
        for target in (root / "ZTF/RA010/ZTF_photometry_x y.h5", root / "DEFAULT/score_histograms.h5"):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = hdf5.temp_path(target)
            tmp.write_bytes(b"x")
            made.append(tmp)
        print("\\n".join(map(str, made)), flush=True)
        print("ready", flush=True)
        if mode == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(3600)
    """
)


def start_owner(root: Path, mode: str) -> tuple[subprocess.Popen[str], list[Path]]:
    proc = subprocess.Popen([sys.executable, "-c", OWNER, str(root), mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    while (line := proc.stdout.readline().strip()) != "ready":
        assert line, "the owner process ended early"
        lines.append(Path(line))
    return proc, lines


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def live_owner(root: Path) -> Iterator[list[Path]]:
    proc, made = start_owner(root, "hold")
    try:
        yield made
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()  # type: ignore[union-attr]


def dead_owner(root: Path) -> list[Path]:
    proc, made = start_owner(root, "die")
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.stdout.close()  # type: ignore[union-attr]
    return made


def exited_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


async def start_engine(root: Path, tmp_path: Path) -> list[Path]:
    """Open (and close) an engine on ``root``; return its scratch folders while it was open."""
    cfg = load_config(
        False,
        overrides={"store": {"data_root": str(root), "db_url": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"}},
    )
    with ThreadPoolExecutor(max_workers=1) as executor:
        engine = Engine(cfg, executor=executor)
        async with engine.opened():
            await engine.wait_for_sweep()
            mine = [p for p in (root / ".scratch").glob("*/*") if p.name == owners.owner_token()]
    return mine


async def test_a_start_keeps_a_live_owners_files_and_sweeps_a_dead_owners(
    root: Path, tmp_path: Path, live_owner: list[Path]
) -> None:
    dead = dead_owner(root)
    assert all(p.exists() for p in live_owner + dead)
    # a temporary file of a process that exited without an owner lock (a notebook's lc.save())
    gone = root / "ZTF/RA010" / f".a.h5.{owners.HOST_TAG}.{exited_pid()}.0123abcd.89abcdef.tmp"
    # another machine's (NFS): its pids mean nothing here; and names we did not make
    other_host = root / "ZTF/RA010" / f".a.h5.{'0' * 8 if owners.HOST_TAG != '0' * 8 else '1' * 8}.1.0123abcd.89abcdef.tmp"
    foreign = [root / "ZTF/RA010/.notes.tmp", root / ".scratch/ztf/my-downloads"]
    for path in (gone, other_host, foreign[0]):
        path.write_bytes(b"x")
    foreign[1].mkdir()

    mine = await start_engine(root, tmp_path)

    assert all(p.exists() for p in live_owner), "a live process's scratch or temporary was deleted"
    assert (live_owner[0] / "half.fits").read_bytes() == b"x"
    assert not any(p.exists() for p in dead), "a dead process's leftovers were kept"
    assert not gone.exists()
    assert other_host.exists() and all(p.exists() for p in foreign)
    assert len(mine) == 1  # the engine had its own scratch folder, and removed it on closing
    assert not mine[0].exists()
    locks = sorted(p.name for p in (root / ".scratch/owners").iterdir())
    live_token = live_owner[0].name
    assert locks == [f"{live_token}.lock"]  # the dead owner's lock went with its files


def test_owner_alive_by_lock_then_by_pid(root: Path) -> None:
    token = owners.owner_token()
    assert owners.owner_alive(root, token)  # no lock file: this pid runs
    with owners.holding(root), owners.holding(root):  # re-entrant: two engines of one process
        assert owners.lock_path(root, token).exists()
        assert owners.owner_alive(root, token)  # locked by this very process (another descriptor)
    assert not owners.lock_path(root, token).exists()
    dead_token = f"{owners.HOST_TAG}.{exited_pid()}.0123abcd"
    assert not owners.owner_alive(root, dead_token)
    assert owners.owner_alive(root, f"{owners.HOST_TAG}.1.0123abcd")  # pid 1 always runs
    assert owners.owner_alive(root, "not-a-token")


@pytest.mark.parametrize("name", ["ZTF_photometry_J1.2+3.h5", "a b.tmp", ".hidden", "Ωmega\u00a0.h5", "x" * 150])
def test_temporary_names_carry_their_owner_whatever_the_target(tmp_path: Path, name: str) -> None:
    tmp = hdf5.temp_path(tmp_path / name)
    match = owners.TEMPORARY.fullmatch(tmp.name)
    assert match is not None and match["token"] == owners.owner_token()
    assert tmp.parent == tmp_path and tmp.name != hdf5.temp_path(tmp_path / name).name


def test_scratch_dir_is_per_owner(tmp_path: Path) -> None:
    token = owners.owner_token()
    assert paths.scratch_dir(tmp_path, "ztf", token) == tmp_path / ".scratch" / "ztf" / token
    assert paths.scratch_dir(tmp_path, "ztf") == tmp_path / ".scratch" / "ztf"
    assert os.path.basename(token).count(".") == 2
