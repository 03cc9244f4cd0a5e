"""Pool-trip benchmark: replayed ZTF jobs through CpuRunner and a real process pool, batched or not.

N jobs (parse, reduce, analyse, as a run does by default) are pushed by ``--callers`` concurrent
callers, as the lane's fetchers would, through a forkserver pool of ``--workers`` processes; each
``--max-batch`` value is timed ``--runs`` times on one warmed-up pool and printed as sources/s.
With ``--parse-only`` a job is only the CSV parse (~15 ms), so the cost of a trip shows on few cores.

    .venv/bin/python scripts/bench_pool.py --n 400 --runs 3 --max-batch 1 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import Executor

from aretriever.adapters.base import Fetched, Target
from aretriever.adapters.ztf import ZtfAdapter
from aretriever.engine.cpu import CpuRunner
from aretriever.engine.pool import CpuJob, default_executor
from aretriever.settings import AnalysisConfig, ZtfConfig
from aretriever.testing.fake_archive import DATA_DIR
from aretriever.testing.ztf_replay import ZtfReplay


def replayed_jobs(n: int, parse_only: bool) -> list[CpuJob]:
    """N sources with real ZTF answers, moved onto distinct positions (as scripts/bench.py does)."""
    replay, adapter = ZtfReplay.load(DATA_DIR), ZtfAdapter(ZtfConfig())
    targets = [Target(f"S{i:05d}", (i * 7.3) % 360, 40.0 + i % 10) for i in range(n)]
    analysis = None if parse_only else AnalysisConfig()
    return [
        CpuJob(
            adapter,
            t,
            Fetched(t, replay.answer(t.ra_deg, t.dec_deg, 32768), "u"),
            reduce=not parse_only,
            analysis=analysis,
        )
        for t in targets
    ]


async def push(runner: CpuRunner, jobs: Sequence[CpuJob], callers: int) -> tuple[float, float]:
    """Wall and parent-CPU seconds for ``callers`` concurrent callers to get every job's result.

    The parent's CPU (loop, pickling and the executor's threads) is what caps a run on many cores.
    """
    todo = iter(jobs)

    async def caller() -> None:
        for job in todo:  # a shared iterator: each caller takes the next job when it is free
            await runner.run(job)

    t0, c0 = time.perf_counter(), time.process_time()
    async with asyncio.TaskGroup() as tg:
        for _ in range(callers):
            tg.create_task(caller())
    return time.perf_counter() - t0, time.process_time() - c0


async def bench(pool: Executor, jobs: Sequence[CpuJob], args: argparse.Namespace) -> None:
    await push(CpuRunner(pool, args.workers), jobs[: 4 * args.workers], args.workers)  # workers started
    rates: dict[int, list[float]] = {m: [] for m in args.max_batch}
    costs: dict[int, list[float]] = {m: [] for m in args.max_batch}
    for _ in range(args.runs):
        # the settings take turns, so a change in the machine's load falls on each of them alike
        for max_batch in args.max_batch:
            runner = CpuRunner(pool, args.workers, max_batch=max_batch)
            wall_s, cpu_s = await push(runner, jobs, args.callers)
            rates[max_batch].append(len(jobs) / wall_s)
            costs[max_batch].append(cpu_s / len(jobs) * 1000)
    for m in args.max_batch:
        shown = " ".join(f"{r:6.1f}" for r in rates[m])
        print(
            f"max_batch={m:<3d} sources/s: {shown}  (median {statistics.median(rates[m]):.1f}); "
            f"parent CPU ms/source: median {statistics.median(costs[m]):.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--max-batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--parse-only", action="store_true", help="no reduction: trips weigh more")
    args = parser.parse_args()
    jobs = replayed_jobs(args.n, args.parse_only)
    body_kb = sum(len(j.fetched.body or b"") for j in jobs if j.fetched) / len(jobs) / 1024
    print(f"{args.n} jobs ({body_kb:.0f} KB bodies), {args.workers} workers, {args.callers} callers")
    pool = default_executor(args.workers)
    try:
        asyncio.run(bench(pool, jobs, args))
    finally:
        pool.shutdown()


if __name__ == "__main__":
    main()
