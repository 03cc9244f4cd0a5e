"""Reliability drill (for humans; the tests run shorter versions): several workers, faults, a kill,
a PostgreSQL outage, then a check that every source is stored exactly once.

    bash scripts/drill [--sources 300] [--workers 3] [--no-pg-outage]

1. a fake archive with faults (latency, 503s, 429s, timeouts, cut bodies) in its own process;
2. a fresh PostgreSQL database; N workers sharing the catalog (``engine.shared_queue``);
3. worker 0 is killed with SIGKILL once a sixth of the sources are done;
4. PostgreSQL is stopped for 10 s once half are done (``pg_ctlcluster``: needs root and Debian's
   PostgreSQL 15; ``--no-pg-outage`` skips it);
5. the other workers must finish with exit 0, and every source must have exactly one raw row, one
   file and no duplicate lightcurve; every work item must be done.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "postgresql://aretriever:aretriever@127.0.0.1:5432/postgres"


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


async def scalar(db: str, sql: str) -> int:
    for _ in range(60):  # the server may be down (that is the drill)
        try:
            conn = await asyncpg.connect(f"postgresql://aretriever:aretriever@127.0.0.1:5432/{db}")
        except (OSError, asyncpg.PostgresError):
            await asyncio.sleep(1)
            continue
        try:
            return int(await conn.fetchval(sql) or 0)
        except asyncpg.UndefinedTableError:
            return 0
        finally:
            await conn.close()
    raise RuntimeError("PostgreSQL did not come back")


async def create_db() -> str:
    name = f"aretriever_drill_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(ADMIN)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return name


def start_archive(port: int) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable, "-m", "aretriever.testing.fake_archive", "--port", str(port),
        "--latency-ms", "300", "--error-rate", "0.05", "--rate-429", "0.02", "--timeout-rate", "0.01",
        "--truncate-rate", "0.01",
    ]  # fmt: skip
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_worker(n: int, args: argparse.Namespace, db: str, port: int, work: Path) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable, "-m", "aretriever.fetch", "--quiet", "--catalog", "test",
        "--data-root", str(work / "data"),
        "--db-url", f"postgresql+asyncpg://aretriever:aretriever@127.0.0.1:5432/{db}",
        "--set", f"observatories.ztf.base_url=http://127.0.0.1:{port}",
        "--set", "observatories.ztf.rate_per_s=60", "--set", "observatories.ztf.timeout_s=3",
        "--set", "observatories.ztf.max_attempts=8", "--set", f"catalog.test_size={args.sources}",
        "--set", "engine.shared_queue=true", "--set", f"engine.n_workers={args.workers}",
        "--set", "engine.lease_s=10", "--set", "engine.workers=1",
    ]  # fmt: skip
    log = (work / f"worker-{n}.log").open("wb")
    return subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


async def wait_done(db: str, at_least: int, procs: list[subprocess.Popen[bytes]]) -> int:
    while True:
        done = await scalar(db, "select count(*) from work_items where state = 'done'")
        if done >= at_least or all(p.poll() is not None for p in procs):
            return done
        await asyncio.sleep(0.5)


async def drill(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="aretriever-drill-"))
    port, db = 18765, await create_db()
    archive = start_archive(port)
    await asyncio.sleep(2)
    t0 = time.monotonic()
    procs = [start_worker(n, args, db, port, work) for n in range(args.workers)]
    try:
        print(f"drill: {args.sources} sources, {args.workers} workers, database {db}, files in {work}")
        done = await wait_done(db, args.sources // 6, procs)
        procs[0].send_signal(signal.SIGKILL)
        print(f"drill: {done} done at {time.monotonic() - t0:.0f} s: worker 0 killed (SIGKILL)")
        if args.pg_outage:
            done = await wait_done(db, args.sources // 2, procs[1:])
            print(f"drill: {done} done at {time.monotonic() - t0:.0f} s: PostgreSQL stopped for 10 s")
            sh("pg_ctlcluster", "15", "main", "stop")
            await asyncio.sleep(10)
            sh("pg_ctlcluster", "15", "main", "start")
        codes = [p.wait(timeout=1800) for p in procs[1:]]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        archive.terminate()
    checks = {
        "workers exited 0": codes == [0] * len(codes),
        "every item done": await scalar(db, "select count(*) from work_items where state = 'done'")
        == args.sources,
        "one raw row each": await scalar(db, "select count(distinct source_name) from raw_photometry")
        == await scalar(db, "select count(*) from raw_photometry")
        == args.sources,
        "one file each": len(list((work / "data").glob("ZTF/RA*/*.h5"))) == args.sources,
        "no duplicate lightcurve": await scalar(
            db,
            "select count(*) from (select 1 from lightcurves group by source_name, series_number"
            " having count(*) > 1) d",
        )
        == 0,
    }
    taken = await scalar(db, "select count(*) from work_items where claims > 1")
    print(f"drill: {time.monotonic() - t0:.0f} s; {taken} items taken over from the killed worker")
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    if all(checks.values()):
        shutil.rmtree(work, ignore_errors=True)
        return 0
    print(f"drill: logs kept in {work}")
    return 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sources", type=int, default=300)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--no-pg-outage", dest="pg_outage", action="store_false")
    args = p.parse_args()
    if args.pg_outage and (os.geteuid() != 0 or shutil.which("pg_ctlcluster") is None):
        print(
            "drill: the PostgreSQL outage needs root and pg_ctlcluster; use --no-pg-outage", file=sys.stderr
        )
        return 2
    return asyncio.run(drill(args))


if __name__ == "__main__":
    sys.exit(main())
