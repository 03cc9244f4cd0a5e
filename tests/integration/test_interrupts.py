"""Interrupted runs: SIGKILL mid-run, then resume; SIGINT drains gracefully. Subprocess CLI."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import pytest
import sqlalchemy as sa

from aretriever.store import db
from aretriever.testing.fake_archive import Faults

pytestmark = pytest.mark.slow


def query(db_url: str, sql: str) -> list[Any]:
    async def go() -> list[Any]:
        engine = db.create_engine(db_url)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(sa.text(sql))).all())
        finally:
            await engine.dispose()

    return asyncio.run(go())


def start_cli(archive_url: str, db_url: str, root: Path, size: int, *extra: str) -> subprocess.Popen[bytes]:
    """The CLI in a subprocess; its output goes to files (pool workers may outlive a SIGKILL)."""
    argv = [
        sys.executable, "-m", "aretriever.fetch", "--quiet", "--catalog", "test",
        "--data-root", str(root), "--db-url", db_url,
        "--set", f"observatories.ztf.base_url={archive_url}",
        "--set", "observatories.ztf.rate_per_s=1000",
        "--set", "observatories.ztf.max_concurrency=8",
        "--set", f"catalog.test_size={size}",
        "--set", "engine.workers=2",
        "--set", "engine.grace_s=20",
        *extra,
    ]  # fmt: skip
    log = root.parent / f"cli-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    proc.wait(timeout=timeout_s)
    return proc.log.read_text()  # type: ignore[attr-defined,no-any-return]


def wait_for_files(root: Path, n: int, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while len(list(root.glob("ZTF/RA*/[!.]*.h5"))) < n:
        assert proc.poll() is None, proc.log.read_text()  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.05)


def assert_every_file_opens(root: Path, *, temporaries_allowed: bool = False) -> None:
    """Every file under a final name is complete; a kill may leave only hidden temporaries."""
    for path in root.rglob("*.h5"):
        if not path.name.startswith("."):
            with h5py.File(path, "r") as f:
                for key in f:
                    assert len(f[key][:]) >= 0
    temporaries = [p for p in root.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert temporaries_allowed or not temporaries


def assert_rows_point_to_complete_files(db_url: str, root: Path) -> None:
    for filename, key, n, nbytes in query(
        db_url, "select filename, filekey, num_rows, nbytes from raw_photometry"
    ):
        assert (root / filename).stat().st_size == nbytes
        with h5py.File(root / filename, "r") as f:
            assert len(f[key]) == n
    for filename, key, n in query(db_url, "select filename, filekey, num_rows from lightcurves"):
        with h5py.File(root / filename, "r") as f:
            assert len(f[key]) == n


def test_sigkill_mid_run_then_resume_completes(archive, db_url, tmp_path: Path) -> None:
    archive.archive.faults = Faults(latency_ms=30)
    root = tmp_path / "data"
    root.mkdir()
    proc = start_cli(archive.url, db_url, root, 150)
    wait_for_files(root, 30, proc)
    proc.send_signal(signal.SIGKILL)
    finish(proc, 30)
    assert 30 <= len(list(root.glob("ZTF/RA*/[!.]*.h5"))) < 150  # killed mid-run
    assert_every_file_opens(root, temporaries_allowed=True)  # nothing half-written under a final name

    proc = start_cli(archive.url, db_url, root, 150)
    log = finish(proc, 300)
    assert proc.returncode == 0, log
    assert query(db_url, "select count(*), count(distinct source_name) from raw_photometry") == [(150, 150)]
    assert_every_file_opens(root, temporaries_allowed=True)
    assert_rows_point_to_complete_files(db_url, root)


def test_sigint_drains_in_flight_work_and_exits_130(archive, db_url, tmp_path: Path) -> None:
    archive.archive.faults = Faults(latency_ms=50)
    root = tmp_path / "data"
    root.mkdir()
    proc = start_cli(archive.url, db_url, root, 200)
    wait_for_files(root, 20, proc)
    proc.send_signal(signal.SIGINT)
    log = finish(proc, 60)
    assert proc.returncode == 130, log
    assert "stop requested" in log
    done = query(db_url, "select count(*) from raw_photometry")[0][0]
    assert 20 <= done < 200
    assert len(list(root.glob("ZTF/RA*/[!.]*.h5"))) == done  # every finished file got its row
    assert_rows_point_to_complete_files(db_url, root)
    assert_every_file_opens(root)

    proc = start_cli(archive.url, db_url, root, 200)
    log = finish(proc, 300)
    assert proc.returncode == 0, log
    assert query(db_url, "select count(*) from raw_photometry") == [(200,)]


def wait_for_log(proc: subprocess.Popen[bytes], text: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in proc.log.read_text():  # type: ignore[attr-defined]
        assert proc.poll() is None, proc.log.read_text()  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, f"the run never logged {text!r}"
        time.sleep(0.05)


def test_second_sigint_aborts_at_once_leaving_nothing_half_written(archive, db_url, tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    proc = start_cli(archive.url, db_url, root, 100, "--set", "engine.grace_s=3600")
    wait_for_files(root, 1, proc)
    # from now on every request hangs for an hour: only an abort ends the run within the wait below
    archive.archive.faults = Faults(latency_ms=3_600_000)
    proc.send_signal(signal.SIGINT)
    wait_for_log(proc, "stop requested")
    proc.send_signal(signal.SIGINT)
    log = finish(proc, 120)
    assert proc.returncode == 130, log
    assert "aborting" in log
    assert_every_file_opens(root, temporaries_allowed=True)
    assert_rows_point_to_complete_files(db_url, root)
