"""aretriever benchmarks: the real CLI against the fake archive, each figure beside its ideal.

- archive-bound: N sources, 400 ms answers with a 5 % tail of 4 s, concurrency 32, 20 requests/s:
  the rate limit binds, so the ideal is N / rate for the whole command, start-up included.
- single-core cost: each stage of one source measured alone in this process (``bench_stages``);
  its inverse is the single-core ceiling.
- cpu-bound: M sources (project ``bench``, version control on), no latency, no rate limit:
  sources/s, and its ratio to the single-core ceiling.
- disk: raw + reduced bytes per source on DATA_ROOT over the archive's answer bytes per source.
- resume: the same M-source command again: archive requests (must be 0) and time as a fraction
  of the first run.
- re-analysis: the same command with another finder threshold (a new cfg hash): every source is
  reduced and analysed again from its raw file; sources/s, archive requests (must be 0).
- memory: peak RSS of the CLI process at M/10 and at M sources.

Every figure is measured ``--repeat`` times, the 1-minute load average noted before each run,
and summed up as min / median / max beside its target.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_stages, beside this file

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PROJECT = ("--project", "bench", "--set", "project.version_control=true")
# changes the analysis, hence the cfg hash: a new product folder, raw data read back from disk
REANALYSIS = ("--set", "analysis.finder.snr_threshold=4.5")
FAST = ("--set", "observatories.ztf.rate_per_s=1000000", "--set", "observatories.ztf.max_concurrency=32")


def load_average() -> float:
    return os.getloadavg()[0]


@dataclass(frozen=True)
class Goal:
    """A target a figure is compared with: ``>= 1.5``, ``<= 300``, ``== 0``."""

    op: str
    bound: float

    def met(self, value: float) -> bool:
        checks: dict[str, Callable[[float, float], bool]] = {
            ">=": float.__ge__,
            "<=": float.__le__,
            "==": float.__eq__,
        }
        return checks[self.op](float(value), float(self.bound))

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}"


@dataclass
class Figure:
    """One figure over the repeats, with the load average before each of its runs."""

    name: str
    unit: str
    goal: Goal | None = None
    values: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)


class Figures:
    """Figures in the order they were first recorded; each record is printed as it comes."""

    def __init__(self) -> None:
        self.figures: dict[str, Figure] = {}

    def record(
        self, name: str, value: float, unit: str, load: float, goal: Goal | None = None, beside: str = ""
    ) -> None:
        """Keep ``value`` and print it; ``beside``: its ideal or what to read it against."""
        figure = self.figures.setdefault(name, Figure(name, unit, goal))
        figure.values.append(value)
        figure.loads.append(load)
        print(format_record(figure, value, beside, load), flush=True)

    def summary(self) -> list[str]:
        return [format_summary(f) for f in self.figures.values()]


def _num(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 or value == int(value) else f"{value:.3g}"


def _verdict(goal: Goal | None, value: float) -> str:
    if goal is None:
        return ""
    return f"target {goal} {'met' if goal.met(value) else 'NOT met'}"


def format_record(figure: Figure, value: float, beside: str, load: float) -> str:
    return (
        f"  {figure.name:<48} {_num(value):>9} {figure.unit:<6} {beside:<26}"
        f" {_verdict(figure.goal, value):<24} load {load:.2f}"
    )


def format_summary(figure: Figure) -> str:
    """min / median / max, the target judged on the median, and the loads seen."""
    v, loads = figure.values, figure.loads
    spread = f"{_num(min(v))} / {_num(statistics.median(v))} / {_num(max(v))}"
    load = f"load {min(loads):.1f}-{max(loads):.1f}"
    return (
        f"  {figure.name:<48} {spread:>22} {figure.unit:<6}"
        f" {_verdict(figure.goal, statistics.median(v)):<24} {load} (n={len(v)})"
    )


@dataclass
class Run:
    elapsed_s: float
    max_rss_mib: float
    load: float  # 1-minute load average just before the run
    summary: dict[str, Any]

    @property
    def ztf(self) -> dict[str, Any]:
        lane: dict[str, Any] = self.summary["observatories"]["ztf"]
        return lane


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
    log = work / f"cli-{time.monotonic_ns()}.log"
    argv = [
        PY, "-m", "aretriever.fetch", "--quiet", "--no-config", "--catalog", "test",
        "--data-root", str(work / "data"),
        "--summary-json", str(summary),
        "--set", f"catalog.test_size={size}",
        "--set", f"observatories.ztf.base_url={url}",
        *extra,
    ]  # fmt: skip
    load = load_average()
    t0 = time.perf_counter()
    with log.open("wb") as out:  # the summary table would interleave with the figures
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        peak_kb = 0
        while proc.poll() is None:  # the CLI process's own high-water mark (pool workers aside)
            peak_kb = max(peak_kb, _vm_hwm_kb(proc.pid))
            time.sleep(0.2)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(log.read_text(errors="replace"))
        raise SystemExit(f"CLI exited {proc.returncode}: {' '.join(argv)}")
    return Run(elapsed, peak_kb / 1024, load, json.loads(summary.read_text()))


def _vm_hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def archive_bound(figures: Figures, n: int, rate: float) -> None:
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
    name = f"archive-bound ({n} sources, {rate:g}/s)"
    figures.record(name, run.elapsed_s, "s", run.load, None, f"ideal {ideal:.1f} s")
    figures.record(f"{name}: ideal / time", ideal / run.elapsed_s, "", run.load, Goal(">=", 0.95))


@dataclass(frozen=True)
class Ceilings:
    fetch_s: float  # single-core seconds per fetched source
    reread_s: float  # single-core seconds per source analysed again from disk


def single_core(figures: Figures, n: int) -> Ceilings:
    import bench_stages

    load = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        ctx, sources = bench_stages.make_sources(Path(tmp), n)
        fetch = bench_stages.fetch_costs(ctx, sources)
        check = bench_stages.writer_check_cost(ctx, sources)
        reread = bench_stages.reread_costs(ctx, sources)
    for label, costs in (("fetched source", fetch), ("re-analysis", reread)):
        for stage, cost in costs.items():
            figures.record(f"single-core {label}: {stage}", cost * 1000, "ms", load)
        figures.record(f"single-core {label}: total", sum(costs.values()) * 1000, "ms", load)
    written = fetch["raw image"] + fetch["reduced image"] + fetch["write bytes"]
    # the images + write bytes stand for today's writer: this shows how well
    figures.record(
        "check: write_h5 of both files (today)",
        check * 1000,
        "ms",
        load,
        None,
        f"images + write {written * 1000:.1f} ms",
    )
    return Ceilings(sum(fetch.values()), sum(reread.values()))


def payload_bytes(m: int) -> int:
    """The archive's answer bytes for the M-source test catalog, as the fake archive serves them."""
    from aretriever.adapters.ztf import build_lightcurve_request, no_data_reason
    from aretriever.catalogs.core import chunk_to_targets, open_local
    from aretriever.settings import CatalogConfig, ZtfConfig
    from aretriever.testing.fake_archive import DATA_DIR, ztf_lightcurves
    from aretriever.testing.ztf_replay import ZtfReplay

    replay, cfg, catalog_cfg = ZtfReplay.load(DATA_DIR), ZtfConfig(), CatalogConfig(test_size=m)
    catalog = open_local("test", catalog_cfg)
    assert catalog is not None
    total = 0
    for chunk in catalog.iter_chunks():
        targets, _ = chunk_to_targets(chunk, catalog_cfg.columns)
        for target in targets:
            if no_data_reason(target, cfg) is None:
                request = build_lightcurve_request(target, cfg)
                total += len(ztf_lightcurves(replay, dict(request.params)).body)
    return total


def disk_bytes(data_root: Path) -> tuple[int, int]:
    """(raw bytes, reduced bytes) of the data files: score histograms and the database aside."""
    raw = sum(p.stat().st_size for p in (data_root / "ZTF").glob("RA*/*.h5"))
    reduced = sum(p.stat().st_size for p in data_root.glob("BENCH_*/RA*/*_reduced.h5"))
    return raw, reduced


def cpu_runs(figures: Figures, m: int, ceilings: Ceilings, payload: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, FakeArchiveProcess() as url:
        work = Path(tmp)
        first = run_cli(url, work, m, *FAST, *PROJECT)
        cpu_bound(figures, m, first, ceilings)
        disk(figures, work / "data", m, payload, first.load)
        resume(figures, run_cli(url, work, m, *FAST, *PROJECT), first)
        reanalysis(figures, m, run_cli(url, work, m, *FAST, *PROJECT, *REANALYSIS), ceilings)
        small_root = work / "small"
        small_root.mkdir()
        memory(figures, m, run_cli(url, small_root, m // 10, *FAST, *PROJECT), first)


def cpu_bound(figures: Figures, m: int, first: Run, ceilings: Ceilings) -> None:
    rate, ceiling = m / first.elapsed_s, 1 / ceilings.fetch_s
    name = f"cpu-bound ({m} sources)"
    figures.record(name, rate, "src/s", first.load, Goal(">=", 100), f"ideal {ceiling:.1f} on 1 core")
    figures.record(f"{name} / single-core ceiling", rate / ceiling, "", first.load, Goal(">=", 1.5))


def disk(figures: Figures, data_root: Path, m: int, payload: int, load: float) -> None:
    raw, reduced = disk_bytes(data_root)
    answer = f"archive answer {payload / m / 1024:.0f} KiB"
    figures.record("disk: raw + reduced per source", (raw + reduced) / m / 1024, "KiB", load, None, answer)
    figures.record("disk: raw per source", raw / m / 1024, "KiB", load)
    figures.record("disk / archive payload", (raw + reduced) / payload, "", load, Goal("<=", 1.5))


def resume(figures: Figures, again: Run, first: Run) -> None:
    figures.record("resume: archive requests", again.ztf["requests"], "", again.load, Goal("==", 0))
    ratio = again.elapsed_s / first.elapsed_s
    figures.record(
        "resume: time / first run", ratio, "", again.load, Goal("<=", 0.05), f"took {again.elapsed_s:.1f} s"
    )


def reanalysis(figures: Figures, m: int, run: Run, ceilings: Ceilings) -> None:
    lane = run.ztf
    if lane["requests"] or lane["reduced"] != m:
        # the whole point of re-analysis is to need no archive: a request here is a bug, not noise
        outcomes = {k: v for k, v in lane.items() if isinstance(v, int)}
        raise SystemExit(f"re-analysis must reduce all {m} sources with 0 requests; got {outcomes}")
    ceiling = 1 / ceilings.reread_s
    rate = m / run.elapsed_s
    figures.record(
        f"re-analysis ({m} sources)",
        rate,
        "src/s",
        run.load,
        Goal(">=", 150),
        f"ideal {ceiling:.1f} on 1 core",
    )
    figures.record("re-analysis: archive requests", lane["requests"], "", run.load, Goal("==", 0))


def memory(figures: Figures, m: int, small: Run, first: Run) -> None:
    figures.record(f"peak RSS of the CLI at {m // 10} sources", small.max_rss_mib, "MiB", small.load)
    figures.record(
        f"peak RSS of the CLI at {m} sources", first.max_rss_mib, "MiB", first.load, Goal("<=", 300)
    )
    ratio = first.max_rss_mib / small.max_rss_mib
    figures.record(f"peak RSS ratio {m} / {m // 10}", ratio, "", first.load, Goal("<=", 1.2))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--archive-sources", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--cpu-sources", type=int, default=20000)
    parser.add_argument("--stage-sources", type=int, default=50, help="sources per single-core stage")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each figure (min/median/max)")
    parser.add_argument("--only", choices=["archive", "cpu"], default=None)
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.cpu_sources < 10:
        parser.error("--repeat must be >= 1 and --cpu-sources >= 10 (the memory figure runs M/10)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    figures = Figures()
    payload = payload_bytes(args.cpu_sources) if args.only != "archive" else 0
    for k in range(1, args.repeat + 1):
        print(f"run {k}/{args.repeat}: load average {load_average():.2f}", flush=True)
        if args.only in (None, "archive"):
            archive_bound(figures, args.archive_sources, args.rate)
        if args.only in (None, "cpu"):
            ceilings = single_core(figures, args.stage_sources)
            cpu_runs(figures, args.cpu_sources, ceilings, payload)
    print(f"summary over {args.repeat} run(s): min / median / max, target judged on the median")
    print("\n".join(figures.summary()))


if __name__ == "__main__":
    main()
