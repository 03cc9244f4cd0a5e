"""Several workers on one PostgreSQL database: claims, leases, one worker killed, exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from aretriever.testing.fake_archive import Faults

from .test_backfill import query

SIZE = 60


def start_worker(archive_url: str, db_url: str, root: Path, n: int) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable, "-m", "aretriever.fetch", "--quiet", "--catalog", "test",
        "--data-root", str(root), "--db-url", db_url, "--no-analyze",
        "--set", f"observatories.ztf.base_url={archive_url}",
        "--set", "observatories.ztf.rate_per_s=300",
        "--set", "observatories.ztf.max_concurrency=2",
        "--set", f"catalog.test_size={SIZE}",
        "--set", "engine.workers=1",
        "--set", "engine.shared_queue=true",
        "--set", "engine.n_workers=3",
        "--set", "engine.lease_s=3",
        "--set", "engine.claim_batch=4",
    ]  # fmt: skip
    log = root.parent / f"worker-{n}.log"
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )


def _count(db_url: str, sql: str) -> int:
    try:
        return int(query(db_url, sql)[0][0])
    except sa.exc.ProgrammingError:  # the workers have not created the table yet
        return 0


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_three_workers_one_killed_every_source_stored_exactly_once(archive, db_url, tmp_path) -> None:
    archive.archive.faults = Faults(latency_ms=1000)  # ~2 sources/s per worker: time to kill one
    root = tmp_path / "data"
    workers = [start_worker(archive.url, db_url, root, n) for n in range(3)]
    victim = workers[0]
    try:
        deadline = time.monotonic() + 120
        mine = f"split_part(worker, ':', 2) = '{victim.pid}'"
        while time.monotonic() < deadline:  # kill it while it holds claims, after some work
            held = _count(db_url, f"select count(*) from work_items where {mine} and state = 'claimed'")
            if held > 0 and _count(db_url, "select count(*) from work_items where state = 'done'") >= 4:
                break
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        taken = query(db_url, f"select count(*) from work_items where {mine} and state = 'claimed'")
        assert taken[0][0] > 0, "the killed worker held no claim: the test proved nothing"
        for proc in workers[1:]:
            assert proc.wait(timeout=240) == 0, (root.parent / "worker-1.log").read_text()[-3000:]
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert query(db_url, "select state, count(*) from work_items group by state") == [("done", SIZE)]
    assert query(db_url, "select max(claims) from work_items")[0][0] >= 2  # taken over after the lease
    assert query(db_url, "select count(*), count(distinct source_name) from raw_photometry") == [(SIZE, SIZE)]
    dupes = "select source_name, series_number, count(*) from lightcurves group by 1, 2 having count(*) > 1"
    assert query(db_url, dupes) == []
    assert len(list(root.glob("ZTF/RA*/*.h5"))) == SIZE
    # a SIGKILL can leave the victim's half-written temporary file (never read as data): only its
    leftovers = list(root.rglob(".*.tmp"))
    assert all(f".{victim.pid}." in p.name for p in leftovers), leftovers
    workers_seen = query(db_url, "select count(distinct worker) from work_items")[0][0]
    assert workers_seen >= 2


def test_a_shared_queue_needs_postgresql(run_cli, tmp_path, capsys) -> None:
    sqlite = f"sqlite+aiosqlite:///{tmp_path}/x.sqlite"
    assert run_cli("--db-url", sqlite, "--set", "engine.shared_queue=true", size=2) == 2
    assert "engine.shared_queue" in capsys.readouterr().err
