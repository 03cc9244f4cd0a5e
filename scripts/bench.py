"""aretriever benchmarks: the real CLI against the fake archive, each figure beside its ideal.

- archive-bound: N sources, 400 ms answers with a 5 % tail of 4 s, concurrency 32, 20 requests/s:
  the rate limit binds, so the ideal is N / rate for the whole command, start-up included.
- cpu-bound: M sources, no latency, no rate limit; sources/s over the single-core ceiling
  1 / (parse + reduce + analyze + raw write + reduced write + row cost), each measured alone in
  this run (the analysis as configured by default: quality cuts, scores, statistics, finder).
- resume: the same M-source command again: archive requests (ideal 0) and time as a fraction of
  the first run (target <= 5 %).
- memory: peak RSS of the CLI process at M/10 and at M sources (target ratio <= 1.2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


@dataclass
class Run:
    elapsed_s: float
    max_rss_mb: float
    summary: dict  # type: ignore[type-arg]


class FakeArchiveProcess:
    """The fake archive in its own process, as an archive would be."""

    def __init__(self, *args: str) -> None:
        self.args = args

    def __enter__(self) -> str:
        self.proc = subprocess.Popen(
            [PY, "-m", "aretriever.testing.fake_archive", "--port", "0", *self.args],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def run_cli(url: str, work: Path, size: int, *extra: str) -> Run:
    summary = work / f"summary-{time.monotonic_ns()}.json"
    argv = [
        PY, "-m", "aretriever.fetch", "--quiet", "--catalog", "test",
        "--data-root", str(work / "data"),
        "--summary-json", str(summary),
        "--set", f"catalog.test_size={size}",
        "--set", f"observatories.ztf.base_url={url}",
        *extra,
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv)
    peak_kb = 0
    while proc.poll() is None:  # the CLI process's own high-water mark (pool workers aside)
        peak_kb = max(peak_kb, _vm_hwm_kb(proc.pid))
        time.sleep(0.2)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"CLI exited {proc.returncode}")
    return Run(elapsed, peak_kb / 1024, json.loads(summary.read_text()))


def _vm_hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def line(name: str, value: str, ideal: str, ratio: float | None = None, target: str = "") -> None:
    tail = f"  ratio {ratio:.2f}" if ratio is not None else ""
    print(f"{name:<38} {value:>16}   ideal {ideal:<14}{tail}  {target}", flush=True)


def archive_bound(n: int, rate: float) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeArchiveProcess("--latency-ms", "400", "--slow-fraction", "0.05", "--slow-ms", "4000") as url,
    ):
        run = run_cli(
            url, Path(tmp), n,
            "--set", "observatories.ztf.max_concurrency=32",
            "--set", f"observatories.ztf.rate_per_s={rate}",
        )  # fmt: skip
    ideal = n / rate
    line(
        f"archive-bound ({n} sources, {rate:g}/s)",
        f"{run.elapsed_s:.1f} s",
        f"{ideal:.1f} s",
        ideal / run.elapsed_s,
        "target >= 0.95",
    )


def single_core_ceiling(n: int = 50) -> dict[str, float]:
    """Per-source cost of each stage, measured alone, in this process, on the same data."""
    from aretriever.adapters.base import Fetched, Target
    from aretriever.adapters.ztf import ZtfAdapter
    from aretriever.science.analysis import analysis_for
    from aretriever.settings import AnalysisConfig, ZtfConfig
    from aretriever.store import paths
    from aretriever.store.hdf5 import write_h5
    from aretriever.testing.fake_archive import DATA_DIR
    from aretriever.testing.ztf_replay import ZtfReplay

    replay, adapter = ZtfReplay.load(DATA_DIR), ZtfAdapter(ZtfConfig())
    targets = [Target(f"S{i:05d}", (i * 7.3) % 360, 40.0 + i % 10) for i in range(n)]
    fetched = [Fetched(t, replay.answer(t.ra_deg, t.dec_deg, 32768), "u") for t in targets]
    costs: dict[str, float] = {}

    def timed(name: str, fn) -> list:  # type: ignore[no-untyped-def,type-arg]
        t0 = time.perf_counter()
        out = [fn(i) for i in range(n)]
        costs[name] = (time.perf_counter() - t0) / n
        return out

    raws = timed("parse", lambda i: adapter.parse(fetched[i]))
    lcs = timed("reduce", lambda i: adapter.reduce(raws[i], targets[i]))
    analysis = analysis_for(AnalysisConfig())
    timed("analyze", lambda i: analysis.analyze(targets[i], lcs[i]))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        timed("raw write", lambda i: write_h5(root / f"r{i}.h5", {targets[i].name: (raws[i], {"a": 1})}))
        timed(
            "reduced write",
            lambda i: write_h5(
                root / f"d{i}.h5",
                {
                    paths.reduction_key(targets[i].name, k + 1, len(lcs[i])): (lc.data, dict(lc.meta))
                    for k, lc in enumerate(lcs[i])
                },
            ),
        )
        costs["rows"] = asyncio.run(_row_cost(root, targets, lcs))
    return costs


async def _row_cost(root: Path, targets: list, lcs: list) -> float:  # type: ignore[type-arg]
    from aretriever.store import rows
    from aretriever.store.db import create_engine, session_factory
    from aretriever.store.schema import migrate
    from aretriever.store.writers import RowWriter

    engine = create_engine(f"sqlite+aiosqlite:///{root}/rows.sqlite")
    await migrate(engine)
    t0 = time.perf_counter()
    async with RowWriter(session_factory(engine)) as writer:
        for t, curves in zip(targets, lcs, strict=True):
            await writer.put(rows.upsert_sources([rows.source_row(t, "bench")]))
            await writer.put(rows.upsert_raw([rows.raw_row(t.name, "ztf", "x", num_rows=1, nbytes=1)]))
            lc_rows = [
                {
                    **rows.product_key(t.name, "ztf", "P", ""),
                    "series_number": k + 1,
                    "series_total": len(curves),
                    "simulation_number": 0,
                    "filename": "y",
                    "filekey": "k",
                    "num_rows": len(lc.data),
                    "nbytes": 1,
                    "filter": lc.filter,
                    "time_start_mjd": lc.time_start_mjd,
                    "time_end_mjd": lc.time_end_mjd,
                }
                for k, lc in enumerate(curves)
            ]
            await writer.put(rows.upsert_lightcurves(lc_rows))
        await writer.flush()
    elapsed = (time.perf_counter() - t0) / len(targets)
    await engine.dispose()
    return elapsed


def cpu_bound_and_resume(m: int) -> None:
    costs = single_core_ceiling()
    per_source = sum(costs.values())
    ceiling = 1 / per_source
    detail = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in costs.items())
    print(f"single-core cost per source: {per_source * 1000:.1f} ms ({detail})", flush=True)
    with tempfile.TemporaryDirectory() as tmp, FakeArchiveProcess() as url:
        work = Path(tmp)
        fast = (
            "--set",
            "observatories.ztf.rate_per_s=1000000",
            "--set",
            "observatories.ztf.max_concurrency=32",
        )
        first = run_cli(url, work, m, *fast)
        rate = m / first.elapsed_s
        line(
            f"cpu-bound ({m} sources)",
            f"{rate:.1f} src/s",
            f"{ceiling:.1f} src/s",
            rate / ceiling,
            "target >= 1.2",
        )
        again = run_cli(url, work, m, *fast)
        requests = again.summary["observatories"]["ztf"]["requests"]
        line("resume: archive requests", f"{requests}", "0", None, "target 0")
        line(
            "resume: time / first run",
            f"{again.elapsed_s:.1f} s",
            f"<= {0.05 * first.elapsed_s:.1f} s",
            again.elapsed_s / first.elapsed_s,
            "target <= 0.05",
        )
        small_root = work / "small"
        small_root.mkdir()
        small = run_cli(url, small_root, m // 10, *fast)
        line(
            f"peak RSS at {m // 10} / {m} sources",
            f"{small.max_rss_mb:.0f} / {first.max_rss_mb:.0f} MB",
            "ratio 1.0",
            first.max_rss_mb / small.max_rss_mb,
            "target <= 1.2",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archive-sources", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--cpu-sources", type=int, default=20000)
    parser.add_argument("--only", choices=["archive", "cpu"], default=None)
    args = parser.parse_args()
    cores = os.cpu_count()
    print(f"machine: {platform.machine()}, {cores} cores, Python {platform.python_version()}")
    if args.only in (None, "archive"):
        archive_bound(args.archive_sources, args.rate)
    if args.only in (None, "cpu"):
        cpu_bound_and_resume(args.cpu_sources)


if __name__ == "__main__":
    main()
